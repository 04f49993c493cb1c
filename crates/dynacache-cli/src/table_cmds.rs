//! `dynacache table create|describe|validate|index|delete|template`.

use clap::{Subcommand, ValueEnum};
use dynacache::Table;
use serde_json::json;

use crate::connect::{Connection, Creates};
use crate::error::CliError;
use crate::iam;
use crate::output::Output;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The table, as an AWS CloudFormation template.
    Cloudformation,
    /// The table, as Terraform.
    Terraform,
    /// An IAM policy document (JSON) for the items of some namespaces of the table.
    Iam,
}

#[derive(Debug, Subcommand)]
pub enum TableCommand {
    /// Create the table (on-demand billing, TTL enabled, the metadata index) if it does not
    /// exist.
    #[command(
        after_help = "Example:\n  dynacache --aws --region eu-west-1 --table my_cache table create"
    )]
    Create {
        /// Without the metadata index: each stored entry costs about one write unit less, and
        /// listing, counting and purging scan the table.
        #[arg(long)]
        without_meta_index: bool,
    },
    /// Describe the table: key schema, TTL, billing, approximate size.
    #[command(after_help = "Example:\n  dynacache table describe --json")]
    Describe,
    /// Check that the table has the schema and TTL setting dynacache expects.
    #[command(after_help = "Example:\n  dynacache --table prod_cache table validate")]
    Validate,
    /// Give an existing table the metadata index, so that listing, counting and purging a
    /// namespace read only its metadata: adds the index if the table lacks it (and waits until
    /// it is built), gives every entry written before it its index attribute (one scan of the
    /// whole table), and marks the table and its namespaces (the ones in it, and
    /// `--namespace`/`--kv-namespace`) as indexed. Run it once every writer runs this version;
    /// running it again is harmless.
    #[command(
        after_help = "Example:\n  dynacache --table prod_cache table index\n\n\
Tables this version creates have the index from the start and are marked; tables deployed from \
`table template` have the index and need this once to be marked. A tenant restricted to its own \
namespaces (`table template --format iam`) reads its namespace's marker: run this with its \
--namespace/--kv-namespace after creating the table. See docs/metadata-index.md."
    )]
    Index,
    /// Delete the table and everything in it.
    #[command(after_help = "Example:\n  dynacache --table old_cache table delete --yes")]
    Delete {
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
    /// Print the table as infrastructure code (the exact schema dynacache expects), or a
    /// least-privilege IAM policy for some namespaces of it.
    #[command(
        after_help = "Example:\n  dynacache table template --format terraform > dynacache.tf\n  \
dynacache table template --format iam --namespace web --namespace sessions > policy.json\n  \
dynacache --region eu-west-1 table template --format iam --account 123456789012 --allow-scan\n\n\
The IAM policy grants GetItem, PutItem, UpdateItem, DeleteItem, BatchGetItem and BatchWriteItem \
on the table, confined by dynamodb:LeadingKeys to the items of the namespaces: `NS:*`, `NS#*`, \
`NS!*` and `NS~*`; and Query on the metadata index, confined to the namespaces' partitions of \
it, for listing, counting and purging (once `table index` has marked the namespaces). Scan names \
no partition key, so it cannot be confined: it is granted only with --allow-scan, on the whole \
table, and clear, stats and vacuum need it. The policy grants no control-plane action: use \
--assume-exists (TablePolicy::AssumeExists). See docs/iam.md."
    )]
    Template {
        /// The format.
        #[arg(long, value_enum, default_value = "cloudformation")]
        format: Format,
        /// With `--format iam`: a namespace whose items the policy covers; repeat it for several.
        /// The policy covers the namespaces given with `--namespace` and `--kv-namespace` (or
        /// DYNACACHE_NAMESPACE and DYNACACHE_KV_NAMESPACE); when neither is given, `http` and `kv`.
        #[arg(
            long = "namespace",
            id = "namespace",
            value_name = "NAMESPACE",
            action = clap::ArgAction::Append
        )]
        namespaces: Vec<String>,
        /// With `--format iam`: the AWS account id in the table's ARN [default: ${AccountId}].
        /// The region is `--region` [default: ${Region}].
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// With `--format iam`: also grant dynamodb:Scan, on the whole table: a Scan cannot be
        /// confined to namespaces.
        #[arg(long)]
        allow_scan: bool,
        /// With `--object-store s3://...`: the days after which the bucket's lifecycle rule
        /// deletes an object, a backstop for objects no entry names (vacuum's job). Set it above
        /// your longest expiry: an entry outliving its object is read as a miss [default: 30].
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
        object_expiration_days: Option<u32>,
    },
}

pub async fn run(conn: &Connection, out: &Output, cmd: TableCommand) -> Result<(), CliError> {
    match cmd {
        TableCommand::Create { without_meta_index } => {
            let table = conn
                .builder(Creates::Yes)
                .meta_index(!without_meta_index)
                .open()
                .await
                .map_err(|e| CliError::storage(e, conn))?;
            out.note(format!(
                "table {:?} is ready ({})",
                table.name(),
                conn.describe()
            ));
            describe(conn, out, &table).await
        }
        TableCommand::Describe => {
            let table = conn.table(Creates::AsIs).await?;
            describe(conn, out, &table).await
        }
        TableCommand::Validate => {
            let table = conn.table(Creates::AsIs).await?;
            table
                .validate()
                .await
                .map_err(|e| CliError::storage(e, conn))?;
            if out.json {
                out.json_line(&json!({"table": table.name(), "valid": true}));
            } else {
                println!(
                    "table {:?} has the expected schema and TTL setting",
                    table.name()
                );
            }
            Ok(())
        }
        TableCommand::Index => {
            let table = conn.table(Creates::AsIs).await?;
            let bar = out.progress("adding the index (DynamoDB builds it from the table)");
            table
                .add_meta_index()
                .await
                .map_err(|e| CliError::storage(e, conn))?;
            bar.finish_and_clear();
            let bar = out.progress("indexing entries written before the index");
            let named = [conn.namespace.as_str(), conn.kv_namespace.as_str()];
            let done = table
                .reindex(&named)
                .await
                .map_err(|e| CliError::storage(e, conn))?;
            bar.finish_and_clear();
            if out.json {
                out.json_line(&json!({
                    "table": table.name(),
                    "scanned": done.scanned,
                    "indexed": done.indexed,
                    "namespaces": done.namespaces,
                }));
            } else {
                println!(
                    "table {:?}: {} items read, {} entries indexed; namespaces marked as \
                     indexed: {}",
                    table.name(),
                    done.scanned,
                    done.indexed,
                    done.namespaces.join(", ")
                );
            }
            Ok(())
        }
        TableCommand::Delete { yes } => {
            if !yes {
                return Err(CliError::new(
                    format!(
                        "this deletes {} and everything in it: pass --yes to confirm",
                        conn.describe()
                    ),
                    2,
                ));
            }
            let table = conn.table(Creates::AsIs).await?;
            table
                .delete_table()
                .await
                .map_err(|e| CliError::storage(e, conn))?;
            out.note(format!("deleted table {:?}", table.name()));
            Ok(())
        }
        TableCommand::Template {
            format,
            namespaces,
            account,
            allow_scan,
            object_expiration_days,
        } => {
            if format != Format::Iam && (account.is_some() || allow_scan) {
                return Err(CliError::new(
                    "--account and --allow-scan go with --format iam",
                    2,
                ));
            }
            let bucket = conn.object_bucket();
            if object_expiration_days.is_some() && (bucket.is_none() || format == Format::Iam) {
                return Err(CliError::new(
                    "--object-expiration-days goes with --object-store s3://bucket/prefix and \
                     --format cloudformation or terraform",
                    2,
                ));
            }
            let spec = Spec {
                table: &conn.table,
                key: "key",
                ttl: "ttl",
                bucket: bucket.as_ref().map(|(b, p)| (b.as_str(), p.as_str())),
                object_expiration_days: object_expiration_days.unwrap_or(OBJECT_EXPIRATION_DAYS),
            };
            let text = match format {
                Format::Cloudformation => cloudformation(&spec),
                Format::Terraform => terraform(&spec),
                Format::Iam => {
                    let printed = iam::policy(&iam::Request {
                        table: &conn.table,
                        namespaces: iam_namespaces(conn, namespaces),
                        region: conn.region.as_deref(),
                        account: account.as_deref(),
                        allow_scan,
                        objects: conn.object_bucket(),
                    })?;
                    for note in &printed.notes {
                        out.note(note);
                    }
                    printed.document
                }
            };
            print!("{text}");
            Ok(())
        }
    }
}

/// The namespaces an IAM policy covers: those named with `--namespace` (as often as needed) and
/// `--kv-namespace`, or, when neither is given, the defaults of both (`http` and `kv`).
fn iam_namespaces(conn: &Connection, namespaces: Vec<String>) -> Vec<String> {
    let given = conn.given;
    if !given.namespace && !given.kv_namespace {
        return vec![conn.namespace.clone(), conn.kv_namespace.clone()];
    }
    let mut all = Vec::new();
    if given.namespace {
        if namespaces.is_empty() {
            all.push(conn.namespace.clone());
        } else {
            all.extend(namespaces);
        }
    }
    if given.kv_namespace {
        all.push(conn.kv_namespace.clone());
    }
    all
}

async fn describe(conn: &Connection, out: &Output, table: &Table) -> Result<(), CliError> {
    let d = table
        .describe()
        .await
        .map_err(|e| CliError::storage(e, conn))?;
    if out.json {
        out.json_line(&json!({
            "table": d.name,
            "status": d.status,
            "key_schema": d.key_schema.iter().map(|(n, k, t)| json!({"name": n, "key_type": k, "type": t})).collect::<Vec<_>>(),
            "ttl_attribute": d.ttl_attribute,
            "ttl_status": d.ttl_status,
            "billing_mode": d.billing_mode,
            "approximate_item_count": d.approximate_item_count,
            "approximate_size_bytes": d.approximate_size_bytes,
            "indexes": d.indexes.iter().map(|(n, s)| json!({"name": n, "status": s})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    println!("table:        {}", d.name);
    println!("status:       {}", d.status);
    for (name, key_type, ty) in &d.key_schema {
        println!("key:          {name} ({key_type}, {ty})");
    }
    println!(
        "TTL:          {} {}",
        d.ttl_status,
        d.ttl_attribute.as_deref().unwrap_or("")
    );
    println!("billing:      {}", d.billing_mode);
    match d
        .indexes
        .iter()
        .find(|(name, _)| name == dynacache::META_INDEX)
    {
        Some((_, status)) => println!("meta index:   {status} (listings read it)"),
        None => println!("meta index:   none (listings scan; `dynacache table index` adds it)"),
    }
    println!(
        "items:        about {} ({} bytes; DynamoDB refreshes these about every six hours)",
        d.approximate_item_count, d.approximate_size_bytes
    );
    Ok(())
}

/// The schema dynacache creates: `Table::create` in the library.
pub struct Spec<'a> {
    pub table: &'a str,
    pub key: &'a str,
    pub ttl: &'a str,
    /// The object store's bucket and key prefix (`--object-store s3://bucket/prefix`).
    pub bucket: Option<(&'a str, &'a str)>,
    /// The days after which the bucket's lifecycle rule deletes an object.
    pub object_expiration_days: u32,
}

/// The days after which the lifecycle rule deletes an object by default: a backstop for
/// objects no entry names (an entry outliving it is read as a miss, never as wrong bytes).
pub const OBJECT_EXPIRATION_DAYS: u32 = 30;

pub fn cloudformation(s: &Spec<'_>) -> String {
    format!(
        r#"# The DynamoDB table dynacache expects (what `dynacache table create` makes).
AWSTemplateFormatVersion: "2010-09-09"
Description: dynacache cache table
Parameters:
  TableName:
    Type: String
    Default: {table}
Resources:
  CacheTable:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Ref TableName
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - AttributeName: {key}
          AttributeType: S
        - AttributeName: {mi}
          AttributeType: S
      KeySchema:
        - AttributeName: {key}
          KeyType: HASH
      # The metadata index: listing, counting and purging a namespace read it, not the table,
      # once it is marked complete: after deploying, run `dynacache table index` once.
      GlobalSecondaryIndexes:
        - IndexName: {index}
          KeySchema:
            - AttributeName: {mi}
              KeyType: HASH
          Projection:
            ProjectionType: INCLUDE
            NonKeyAttributes: [{projected}]
      TimeToLiveSpecification:
        AttributeName: {ttl}
        Enabled: true
{bucket}Outputs:
  TableName:
    Value: !Ref CacheTable
  TableArn:
    Value: !GetAtt CacheTable.Arn
{bucket_out}"#,
        table = s.table,
        key = s.key,
        ttl = s.ttl,
        mi = dynacache::META_ATTRIBUTE,
        index = dynacache::META_INDEX,
        projected = dynacache::META_PROJECTED.join(", "),
        bucket = s.bucket.map_or(String::new(), |(b, p)| {
            cloudformation_bucket(b, p, s.object_expiration_days)
        }),
        bucket_out = if s.bucket.is_some() {
            "  BucketName:\n    Value: !Ref ObjectBucket\n"
        } else {
            ""
        },
    )
}

/// The object store's bucket: private, encrypted, and a lifecycle rule as a backstop.
fn cloudformation_bucket(bucket: &str, prefix: &str, days: u32) -> String {
    format!(
        r#"  # Large values and bodies (`--object-store s3://{bucket}/{prefix}`). Writers delete the
  # objects they replace, and `dynacache vacuum` those no entry names; the lifecycle rule is a
  # backstop (an entry outliving its object is a miss). Set the days above your longest expiry
  # (`--object-expiration-days`).
  ObjectBucket:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: {bucket}
      PublicAccessBlockConfiguration:
        BlockPublicAcls: true
        BlockPublicPolicy: true
        IgnorePublicAcls: true
        RestrictPublicBuckets: true
      BucketEncryption:
        ServerSideEncryptionConfiguration:
          - ServerSideEncryptionByDefault:
              SSEAlgorithm: AES256
      LifecycleConfiguration:
        Rules:
          - Id: dynacache-backstop
            Status: Enabled
            Prefix: "{prefix}"
            ExpirationInDays: {days}
            AbortIncompleteMultipartUpload:
              DaysAfterInitiation: 1
"#,
    )
}

/// The object store's bucket for Terraform.
fn terraform_bucket(bucket: &str, prefix: &str, days: u32) -> String {
    format!(
        r#"
# Large values and bodies (`--object-store s3://{bucket}/{prefix}`). Writers delete the objects
# they replace, and `dynacache vacuum` those no entry names; the lifecycle rule is a backstop (an
# entry outliving its object is a miss). Set the days above your longest expiry
# (`--object-expiration-days`).
resource "aws_s3_bucket" "objects" {{
  bucket = "{bucket}"
}}

resource "aws_s3_bucket_public_access_block" "objects" {{
  bucket                  = aws_s3_bucket.objects.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}}

resource "aws_s3_bucket_lifecycle_configuration" "objects" {{
  bucket = aws_s3_bucket.objects.id

  rule {{
    id     = "dynacache-backstop"
    status = "Enabled"

    filter {{
      prefix = "{prefix}"
    }}

    expiration {{
      days = {days}
    }}

    abort_incomplete_multipart_upload {{
      days_after_initiation = 1
    }}
  }}
}}

output "bucket_name" {{
  value = aws_s3_bucket.objects.bucket
}}
"#,
    )
}

pub fn terraform(s: &Spec<'_>) -> String {
    format!(
        r#"# The DynamoDB table dynacache expects (what `dynacache table create` makes).
variable "table_name" {{
  type    = string
  default = "{table}"
}}

resource "aws_dynamodb_table" "cache" {{
  name         = var.table_name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "{key}"

  attribute {{
    name = "{key}"
    type = "S"
  }}

  attribute {{
    name = "{mi}"
    type = "S"
  }}

  # The metadata index: listing, counting and purging a namespace read it, not the table,
  # once it is marked complete: after applying, run `dynacache table index` once.
  global_secondary_index {{
    name               = "{index}"
    hash_key           = "{mi}"
    projection_type    = "INCLUDE"
    non_key_attributes = [{projected}]
  }}

  ttl {{
    attribute_name = "{ttl}"
    enabled        = true
  }}
}}

output "table_name" {{
  value = aws_dynamodb_table.cache.name
}}

output "table_arn" {{
  value = aws_dynamodb_table.cache.arn
}}
{bucket}"#,
        table = s.table,
        key = s.key,
        ttl = s.ttl,
        mi = dynacache::META_ATTRIBUTE,
        index = dynacache::META_INDEX,
        projected = dynacache::META_PROJECTED
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        bucket = s.bucket.map_or(String::new(), |(b, p)| terraform_bucket(
            b,
            p,
            s.object_expiration_days
        )),
    )
}
