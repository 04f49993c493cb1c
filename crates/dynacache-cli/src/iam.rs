//! `dynacache table template --format iam`: a least-privilege IAM policy for some namespaces.
//!
//! Every item of a namespace has a partition key starting with the namespace and one of four
//! separators (`crates/dynacache/src/store/key.rs` and `chunks.rs`): `{ns}:{key}` (readable keys),
//! `{ns}#{sha256 hex}` (long or binary keys), `{ns}!{version}!{index}` (chunks of large values)
//! and `{ns}~{name}` (leases: fleet-wide single flight and user leases). A namespace contains none
//! of the separators, so `{ns}:*`, `{ns}#*`, `{ns}!*` and `{ns}~*` match that namespace's items
//! and no other's. The policy grants the item actions on the table under a
//! `ForAllValues:StringLike` condition on `dynamodb:LeadingKeys` with those patterns (and a `Null`
//! condition, so that a request without a partition key is not allowed by an empty "for all").
//! `dynamodb:Query` on the metadata index (`table/NAME/index/meta`) is granted under the same
//! condition: the index's partition key is `{ns}#{shard}`, which `{ns}#*` matches.
//! `dynamodb:Scan` has no partition key to check: it is granted only on request, on the whole
//! table, in a statement of its own.

use serde::Serialize;
use serde_json::json;

use crate::error::CliError;

/// The item actions dynacache uses (`crates/dynacache/src/table/ops.rs`); each names the partition
/// keys it touches, so `dynamodb:LeadingKeys` confines it.
pub const ITEM_ACTIONS: [&str; 6] = [
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
];

/// The separators that follow the namespace in every partition key dynacache writes.
const SEPARATORS: [char; 4] = [':', '#', '!', '~'];

/// An IAM policy document, with its elements in the usual order.
#[derive(Debug, Serialize)]
struct Policy {
    #[serde(rename = "Version")]
    version: &'static str,
    #[serde(rename = "Statement")]
    statement: Vec<Statement>,
}

#[derive(Debug, Serialize)]
struct Statement {
    #[serde(rename = "Sid")]
    sid: &'static str,
    #[serde(rename = "Effect")]
    effect: &'static str,
    #[serde(rename = "Action")]
    action: Vec<&'static str>,
    #[serde(rename = "Resource")]
    resource: serde_json::Value,
    #[serde(rename = "Condition", skip_serializing_if = "Option::is_none")]
    condition: Option<serde_json::Value>,
}

/// What the policy is for.
#[derive(Debug)]
pub struct Request<'a> {
    pub table: &'a str,
    pub namespaces: Vec<String>,
    pub region: Option<&'a str>,
    pub account: Option<&'a str>,
    pub allow_scan: bool,
    /// The bucket and key prefix of the object store, when there is one.
    pub objects: Option<(String, String)>,
}

/// The policy document (pretty JSON, ending with a newline) and notes for people.
pub struct Printed {
    pub document: String,
    pub notes: Vec<String>,
}

/// The `dynamodb:LeadingKeys` patterns of one namespace's items.
pub fn patterns(ns: &str) -> Vec<String> {
    SEPARATORS.iter().map(|sep| format!("{ns}{sep}*")).collect()
}

/// Refuses a namespace that dynacache would refuse (the rule of `validate_namespace` in
/// `crates/dynacache/src/store/key.rs`), and first of all one with an IAM wildcard in it.
pub fn check_namespace(ns: &str) -> Result<(), CliError> {
    if ns.contains(['*', '?']) {
        return Err(CliError::new(
            format!(
                "namespace {ns:?} contains `*` or `?`, the wildcards of IAM's StringLike: \
                 a policy for it would reach other namespaces (and dynacache refuses such \
                 a namespace)"
            ),
            2,
        ));
    }
    let ok = !ns.is_empty()
        && ns.len() <= 64
        && ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    if ok {
        Ok(())
    } else {
        Err(CliError::new(
            format!(
                "namespace {ns:?} is not valid: use 1 to 64 characters of letters, digits, \
                 '_', '-', '.' and '/'"
            ),
            2,
        ))
    }
}

/// DynamoDB's rule for table names (3 to 255 of `a-z A-Z 0-9 _ - .`): no wildcard can widen the
/// policy's resource.
fn check_table(name: &str) -> Result<(), CliError> {
    let ok = (3..=255).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(CliError::new(
            format!(
                "table name {name:?} is not valid for DynamoDB: use 3 to 255 characters of \
                 letters, digits, '_', '-' and '.'"
            ),
            2,
        ))
    }
}

fn check_account(account: &str) -> Result<(), CliError> {
    if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(CliError::new(
            format!("--account {account:?} is not an AWS account id (12 digits)"),
            2,
        ))
    }
}

fn check_region(region: &str) -> Result<(), CliError> {
    let ok = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CliError::new(
            format!("region {region:?} is not an AWS region name (such as eu-west-1)"),
            2,
        ))
    }
}

/// The ARN partition of a region: `aws-cn` in China, `aws-us-gov` in GovCloud, else `aws`.
fn partition(region: Option<&str>) -> &'static str {
    match region {
        Some(r) if r.starts_with("cn-") => "aws-cn",
        Some(r) if r.starts_with("us-gov-") => "aws-us-gov",
        _ => "aws",
    }
}

/// The table's ARN, with `${Region}` and `${AccountId}` where they are not given.
pub fn table_arn(table: &str, region: Option<&str>, account: Option<&str>) -> String {
    format!(
        "arn:{}:dynamodb:{}:{}:table/{table}",
        partition(region),
        region.unwrap_or("${Region}"),
        account.unwrap_or("${AccountId}"),
    )
}

pub fn policy(req: &Request<'_>) -> Result<Printed, CliError> {
    check_table(req.table)?;
    if let Some(r) = req.region {
        check_region(r)?;
    }
    if let Some(a) = req.account {
        check_account(a)?;
    }
    let mut namespaces: Vec<&str> = Vec::new();
    for ns in &req.namespaces {
        check_namespace(ns)?;
        if !namespaces.contains(&ns.as_str()) {
            namespaces.push(ns);
        }
    }
    if namespaces.is_empty() {
        return Err(CliError::new("name at least one namespace", 2));
    }
    let resource = table_arn(req.table, req.region, req.account);
    let leading_keys: Vec<String> = namespaces.iter().flat_map(|ns| patterns(ns)).collect();
    let mut statement = vec![Statement {
        sid: "DynacacheItemsOfItsNamespaces",
        effect: "Allow",
        action: ITEM_ACTIONS.to_vec(),
        resource: json!(resource),
        condition: Some(json!({
            "ForAllValues:StringLike": { "dynamodb:LeadingKeys": leading_keys },
            "Null": { "dynamodb:LeadingKeys": "false" },
        })),
    }];
    // Listing, counting and purging a namespace read its partitions of the metadata index:
    // `{ns}#{shard}`, which `NS#*` matches (on an index, LeadingKeys is the index's key).
    statement.push(Statement {
        sid: "DynacacheMetadataIndexOfItsNamespaces",
        effect: "Allow",
        action: vec!["dynamodb:Query"],
        resource: json!(format!("{resource}/index/{}", dynacache::META_INDEX)),
        condition: Some(json!({
            "ForAllValues:StringLike": { "dynamodb:LeadingKeys": leading_keys },
            "Null": { "dynamodb:LeadingKeys": "false" },
        })),
    });
    if req.allow_scan {
        statement.push(Statement {
            sid: "DynacacheScanOfTheWholeTable",
            effect: "Allow",
            action: vec!["dynamodb:Scan"],
            resource: json!(resource),
            condition: None,
        });
    }
    if let Some((bucket, prefix)) = &req.objects {
        let partition = partition(req.region);
        let prefixes: Vec<String> = namespaces
            .iter()
            .map(|ns| dynacache::objects::namespace_prefix(prefix, ns))
            .collect();
        statement.push(Statement {
            sid: "DynacacheObjectsOfItsNamespaces",
            effect: "Allow",
            action: vec!["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            resource: json!(
                prefixes
                    .iter()
                    .map(|p| format!("arn:{partition}:s3:::{bucket}/{p}*"))
                    .collect::<Vec<_>>()
            ),
            condition: None,
        });
        // `clear` and `vacuum` list a namespace's objects: ListBucket, confined to its prefixes.
        statement.push(Statement {
            sid: "DynacacheListingOfItsObjects",
            effect: "Allow",
            action: vec!["s3:ListBucket"],
            resource: json!(format!("arn:{partition}:s3:::{bucket}")),
            condition: Some(json!({
                "StringLike": {
                    "s3:prefix": prefixes.iter().map(|p| format!("{p}*")).collect::<Vec<_>>()
                },
            })),
        });
    }
    let mut document = serde_json::to_string_pretty(&Policy {
        version: "2012-10-17",
        statement,
    })
    .map_err(|e| CliError::new(format!("cannot write the policy: {e}"), 1))?;
    document.push('\n');

    let listed = namespaces
        .iter()
        .map(|ns| format!("{ns:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut notes = vec![format!(
        "IAM policy for table {:?}: GetItem, PutItem, UpdateItem, DeleteItem, BatchGetItem and \
         BatchWriteItem on the items of namespace(s) {listed} only, and Query on their \
         partitions of the metadata index (dynamodb:LeadingKeys).",
        req.table
    )];
    if req.allow_scan {
        notes.push(
            "warning: dynamodb:Scan is granted on the WHOLE table, every namespace included: a \
             Scan names no partition key, so dynamodb:LeadingKeys cannot confine it (dynacache \
             filters by namespace only after DynamoDB has returned the items)."
                .to_owned(),
        );
    } else {
        notes.push(
            "dynamodb:Scan is not granted (it cannot be confined to a namespace): listing, \
             clear, stats and vacuum (`stats`, `clear`, `demo`) are refused; --allow-scan \
             grants it, on the whole table. Listing, counting and purging (`ls`, `kv ls`, \
             `purge`) read the metadata index (dynamodb:Query, granted) once the namespace is \
             marked as indexed: run `dynacache table index` with its --namespace."
                .to_owned(),
        );
    }
    notes.push(
        "No control-plane action is granted: open the table with TablePolicy::AssumeExists \
         (CLI: --assume-exists)."
            .to_owned(),
    );
    if let Some((bucket, _)) = &req.objects {
        notes.push(format!(
            "Objects: GetObject, PutObject and DeleteObject under each namespace's prefix of \
             bucket {bucket:?}, and ListBucket of those prefixes only; no bucket-level call \
             (--assume-exists skips the bucket check too)."
        ));
    }
    if req.region.is_none() || req.account.is_none() {
        notes.push(
            "Replace ${Region} and ${AccountId} in the resource, or pass --region and --account."
                .to_owned(),
        );
    }
    Ok(Printed { document, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(namespaces: &[&str]) -> Request<'static> {
        Request {
            table: "dynacache",
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            region: None,
            account: None,
            allow_scan: false,
            objects: None,
        }
    }

    #[test]
    fn iam_patterns_follow_the_key_layout() {
        assert_eq!(patterns("web"), ["web:*", "web#*", "web!*", "web~*"]);
    }

    #[test]
    fn iam_refuses_wildcards_and_what_dynacache_refuses() {
        for bad in [
            "a*", "*", "a?b", "?", "", "a:b", "a#b", "a!b", "a~b", "a b", "é",
        ] {
            assert!(policy(&request(&[bad])).is_err(), "{bad:?}");
        }
        let long = "n".repeat(65);
        assert!(policy(&request(&[&long])).is_err());
        for good in ["kv", "tenant-a/web", "a.b_c-d", &"n".repeat(64)] {
            assert!(policy(&request(&[good])).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn iam_resource_and_its_checks() {
        assert_eq!(
            table_arn("t1", None, None),
            "arn:aws:dynamodb:${Region}:${AccountId}:table/t1"
        );
        assert_eq!(
            table_arn("t1", Some("cn-north-1"), Some("123456789012")),
            "arn:aws-cn:dynamodb:cn-north-1:123456789012:table/t1"
        );
        assert_eq!(
            table_arn("t1", Some("us-gov-west-1"), None),
            "arn:aws-us-gov:dynamodb:us-gov-west-1:${AccountId}:table/t1"
        );
        let mut r = request(&["kv"]);
        r.account = Some("12345");
        assert!(policy(&r).is_err());
        let mut r = request(&["kv"]);
        r.region = Some("EU WEST");
        assert!(policy(&r).is_err());
        let mut r = request(&["kv"]);
        r.table = "cache*";
        assert!(policy(&r).is_err());
        assert!(policy(&request(&[])).is_err());
    }

    #[test]
    fn iam_namespaces_named_twice_appear_once() {
        let printed = policy(&request(&["kv", "kv"])).unwrap();
        let v: serde_json::Value = serde_json::from_str(&printed.document).unwrap();
        assert_eq!(
            v["Statement"][0]["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"],
            json!(["kv:*", "kv#*", "kv!*", "kv~*"])
        );
    }
}
