//! The one error type of dynacache, by meaning.

use std::error::Error as StdError;
use std::fmt;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// A boxed underlying cause (an AWS SDK error, a serde error, an I/O error).
pub type Source = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong, by meaning.
///
/// Each variant keeps the underlying error (from the AWS SDK, serde, ...) as its
/// [`source`](std::error::Error::source), so the full chain can be logged, while callers
/// decide what to do from the variant or the predicate methods such as
/// [`is_throttled`](Error::is_throttled).
///
/// ```
/// use dynacache::Error;
///
/// fn should_retry_later(e: &Error) -> bool {
///     e.is_throttled() || e.is_timeout() || e.is_unreachable()
/// }
/// assert!(!should_retry_later(&Error::InvalidKey { reason: "empty".into() }));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key cannot be used (it is empty, for example).
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// Why the key was refused.
        reason: String,
    },

    /// An argument is out of range (a counter delta that cannot be negated, for one).
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong.
        reason: String,
    },

    /// A name given in the configuration (table, attribute, namespace) is not valid.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },

    /// The value is larger than this cache accepts (see `max_value_size`), or the engine
    /// refused an item as too large.
    #[error("value too large: {size} bytes, the limit is {limit} bytes")]
    ItemTooLarge {
        /// Size of the value or item, in bytes.
        size: u64,
        /// The limit that was exceeded, in bytes.
        limit: u64,
    },

    /// The value could not be serialized.
    #[error("the value could not be serialized")]
    Serialize(#[source] Source),

    /// A stored value could not be deserialized into the requested type.
    #[error("the stored value for key {key:?} could not be deserialized into the requested type")]
    Deserialize {
        /// The cache key, as stored (lossy UTF-8).
        key: String,
        /// The serde error.
        #[source]
        source: Source,
    },

    /// A stored item is damaged or was tampered with: a missing attribute, a checksum that
    /// does not match, undecodable compression, a counter that is not a number.
    #[error("corrupt cache item {key:?}: {reason}")]
    Corrupt {
        /// The item's key, as stored.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A conditional update kept losing to concurrent writers of the same key (a counter that
    /// kept being replaced between attempts). Retrying later may succeed; it is not throttling.
    #[error("key {key:?} kept changing under concurrent writers")]
    Contention {
        /// The cache key, as stored.
        key: String,
    },

    /// The operation needs a counter (`inc`/`dec`) but the key holds another value.
    #[error("key {key:?} holds a value that is not a counter")]
    NotACounter {
        /// The cache key, as stored.
        key: String,
    },

    /// DynamoDB throttled the request, and the configured retries did not get it through
    /// (ProvisionedThroughputExceeded, Throttling, RequestLimitExceeded, or batch items that
    /// stayed unprocessed).
    #[error("throttled by DynamoDB: {message}")]
    Throttled {
        /// What DynamoDB or dynacache said.
        message: String,
        /// The SDK error, when there is one.
        #[source]
        source: Option<Source>,
    },

    /// The table does not exist (or is not active yet).
    #[error("table {table:?} not found")]
    TableNotFound {
        /// The table name.
        table: String,
        /// The SDK error.
        #[source]
        source: Option<Source>,
    },

    /// The table exists but its key schema or TTL setting is not what dynacache expects.
    #[error("table {table:?} does not have the expected schema: {}", problems.join("; "))]
    SchemaMismatch {
        /// The table name.
        table: String,
        /// Each difference, as a sentence.
        problems: Vec<String>,
    },

    /// The credentials were refused, or lack a permission.
    #[error("access denied: {message}")]
    AccessDenied {
        /// What DynamoDB said.
        message: String,
        /// The SDK error.
        #[source]
        source: Source,
    },

    /// No credentials could be found, or they could not be loaded.
    #[error("no usable AWS credentials: {message}")]
    Credentials {
        /// What the credential chain said.
        message: String,
        /// The SDK error.
        #[source]
        source: Source,
    },

    /// The request timed out.
    #[error("timed out talking to DynamoDB")]
    Timeout(#[source] Source),

    /// The endpoint could not be reached (connection refused, DNS failure, TLS failure).
    #[error("DynamoDB endpoint unreachable")]
    Unreachable(#[source] Source),

    /// DynamoDB kept failing (timeouts, an unreachable endpoint, throttling, server errors), so
    /// the table's circuit breaker stopped calling it for a while: this call was not sent. See
    /// [`CircuitBreaker`](crate::CircuitBreaker).
    #[error("table {table:?} unavailable: DynamoDB kept failing; calls resume in {retry_in:?}")]
    Unavailable {
        /// The table name.
        table: String,
        /// How long until a call is tried again (zero: a probe call is under way).
        retry_in: std::time::Duration,
    },

    /// DynamoDB answered with an error that has no variant of its own.
    #[error("DynamoDB error {code}: {message}")]
    Service {
        /// The error code, such as `ValidationException`.
        code: String,
        /// The error message.
        message: String,
        /// The SDK error.
        #[source]
        source: Source,
    },

    /// The embedded engine could not be started or opened.
    #[error("embedded engine: {message}")]
    Embedded {
        /// What failed.
        message: String,
    },
}

impl Error {
    /// DynamoDB throttled the request (after retries).
    pub fn is_throttled(&self) -> bool {
        matches!(self, Error::Throttled { .. })
    }

    /// The table is missing.
    pub fn is_table_not_found(&self) -> bool {
        matches!(self, Error::TableNotFound { .. })
    }

    /// The request timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }

    /// The endpoint could not be reached.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable(_))
    }

    /// The call was not sent: the table's circuit breaker is open after repeated failures.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// A stored item was damaged, tampered with, or could not be decoded as the requested type.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Error::Corrupt { .. } | Error::Deserialize { .. })
    }

    /// The value was over a size limit.
    pub fn is_too_large(&self) -> bool {
        matches!(self, Error::ItemTooLarge { .. })
    }

    /// The caller passed something invalid (key, argument, configuration, value that cannot
    /// serialize).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidKey { .. }
                | Error::InvalidArgument { .. }
                | Error::InvalidConfig { .. }
                | Error::Serialize(_)
        )
    }

    /// Concurrent writers kept changing the key (see [`Error::Contention`]).
    pub fn is_contention(&self) -> bool {
        matches!(self, Error::Contention { .. })
    }

    pub(crate) fn corrupt(key: &str, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            reason: reason.into(),
        }
    }

    /// Maps an AWS SDK error by meaning. `table` names the table for `TableNotFound`.
    pub(crate) fn from_sdk<E, R>(err: SdkError<E, R>, table: &str) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
        R: fmt::Debug + Send + Sync + 'static,
    {
        match err {
            SdkError::TimeoutError(_) => Error::Timeout(Box::new(err)),
            SdkError::DispatchFailure(ref d) => {
                if d.is_timeout() {
                    Error::Timeout(Box::new(err))
                } else if d.is_io() {
                    Error::Unreachable(Box::new(err))
                } else {
                    let text = format!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(&err));
                    if text.contains("credential") {
                        Error::Credentials {
                            message: text,
                            source: Box::new(err),
                        }
                    } else {
                        Error::Unreachable(Box::new(err))
                    }
                }
            }
            SdkError::ConstructionFailure(_) => {
                let text = format!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(&err));
                if text.contains("credential") {
                    Error::Credentials {
                        message: text,
                        source: Box::new(err),
                    }
                } else {
                    Error::Service {
                        code: "ConstructionFailure".into(),
                        message: text,
                        source: Box::new(err),
                    }
                }
            }
            SdkError::ServiceError(ref s) => {
                let code = s.err().code().unwrap_or("Unknown").to_owned();
                let message = s.err().message().unwrap_or_default().to_owned();
                Self::from_code(code, message, table, Box::new(err))
            }
            _ => {
                let code = err.code().unwrap_or("Unknown").to_owned();
                let message = format!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(&err));
                Self::from_code(code, message, table, Box::new(err))
            }
        }
    }

    fn from_code(code: String, message: String, table: &str, source: Source) -> Self {
        match code.as_str() {
            "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded" => Error::Throttled {
                message,
                source: Some(source),
            },
            "ResourceNotFoundException" => Error::TableNotFound {
                table: table.to_owned(),
                source: Some(source),
            },
            "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "MissingAuthenticationTokenException"
            | "ExpiredTokenException" => Error::AccessDenied { message, source },
            "ValidationException"
                if message.contains("Item size") || message.contains("item size") =>
            {
                Error::ItemTooLarge {
                    size: 0,
                    limit: crate::table::MAX_ITEM_BYTES as u64,
                }
            }
            _ => Error::Service {
                code,
                message,
                source,
            },
        }
    }
}

/// `Result` with dynacache's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
