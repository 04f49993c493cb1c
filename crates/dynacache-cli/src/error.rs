//! Friendly errors and exit codes.

use crate::connect::Connection;

/// An error the tool reports in one or two sentences, with what to do about it.
#[derive(Debug)]
pub struct CliError {
    message: String,
    hint: Option<String>,
    code: i32,
}

pub const EXIT_ERROR: i32 = 1;
pub const EXIT_NOT_FOUND: i32 = 3;
pub const EXIT_UNREACHABLE: i32 = 4;
pub const EXIT_TABLE: i32 = 5;
pub const EXIT_ORIGIN: i32 = 6;

impl CliError {
    pub fn new(message: impl Into<String>, code: i32) -> Self {
        CliError {
            message: message.into(),
            hint: None,
            code,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        CliError::new(what, EXIT_NOT_FOUND)
    }

    /// A storage error, explained for the connection it happened on.
    pub fn storage(e: dynacache::Error, conn: &Connection) -> Self {
        use dynacache::Error as E;
        match &e {
            E::TableNotFound { table, .. } => CliError::new(
                format!("table {table:?} does not exist in {}", conn.location()),
                EXIT_TABLE,
            )
            .hint(if conn.is_embedded() {
                "create it with `dynacache table create` (or fill it with `dynacache demo`), or name another with --table"
            } else {
                "create it with `dynacache table create`, or name another with --table"
            }),
            E::SchemaMismatch { table, problems } => CliError::new(
                format!(
                    "table {table:?} does not have the schema dynacache expects:\n  - {}",
                    problems.join("\n  - ")
                ),
                EXIT_TABLE,
            )
            .hint("use another --table, or see `dynacache table template` for the expected schema"),
            E::Unreachable(_) | E::Timeout(_) => CliError::new(
                format!("cannot reach DynamoDB: {e} ({})", conn.describe()),
                EXIT_UNREACHABLE,
            )
            .hint(match &conn.endpoint_url {
                Some(_) => "is the endpoint running? For DynamoDB Local: scripts/dynamodb-local start",
                None => "check the network and the region (--region), or omit --aws to use the embedded engine",
            }),
            E::Credentials { .. } => CliError::new(
                "no usable AWS credentials were found",
                EXIT_UNREACHABLE,
            )
            .hint("set AWS_PROFILE (or --profile), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; or omit --aws to use the embedded engine"),
            E::AccessDenied { message, .. } => CliError::new(
                format!("access denied: {message}"),
                EXIT_UNREACHABLE,
            )
            .hint("the IAM policy needs the dynamodb actions listed in the README, section \"Permissions, and AWS Lambda\""),
            E::Embedded { message } => CliError::new(
                format!("the embedded engine could not start: {message}"),
                EXIT_ERROR,
            )
            .hint("check that --embedded-file (or DYNACACHE_EMBEDDED_FILE) is a writable path"),
            // Why it does not decode (such as a Python object stored with pickle=True).
            E::Deserialize { source, .. } => CliError::new(format!("{e}: {source}"), EXIT_ERROR),
            _ => CliError::new(format!("{e}"), EXIT_ERROR),
        }
    }

    pub fn exit_code(&self) -> i32 {
        self.code
    }

    pub fn report(&self) {
        eprintln!("error: {}", self.message);
        if let Some(h) = &self.hint {
            eprintln!("hint: {h}");
        }
    }
}
