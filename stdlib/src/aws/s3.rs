//! The `aws::s3` namespace: the Argo artifact bucket of the guide, converged — region (with the
//! us-east-1 LocationConstraint quirk), default encryption, public access block, versioning,
//! tags — and a clear error when the name belongs to another account.

use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tag, Tagging,
    VersioningConfiguration,
};
use rhai::plugin::*;
use rhai::{Dynamic, Map};
use serde_json::{Value, json};

use crate::aws::{clients, has_code, identity, sdk_error, status};
use crate::converge::{self, Applied, Planned, Resource};
use crate::diff;
use crate::error::{ErrorKind, HostError, RhaiResult};
use crate::host::Host;
use crate::journal::FieldChange;
use crate::value::{Tags, check_keys, from_json, opt};

const OPTIONS: &[&str] = &["region", "encryption", "block_public", "versioning", "tags"];

/// What the script asked of a bucket (only the fields it set are compared).
struct Spec {
    region: String,
    encryption: Option<Value>,
    block_public: Option<bool>,
    versioning: Option<bool>,
    tags: Option<Vec<(String, String)>>,
}

/// `encryption`: `true`/`"AES256"`, `"aws:kms"`, `"aws:kms:dsse"`, or `#{algorithm, kms_key,
/// bucket_key}`; `false`/`()` leaves it alone (S3 always encrypts with SSE-S3 at least).
fn encryption_spec(d: Option<&Dynamic>) -> Result<Option<Value>, HostError> {
    let Some(d) = d.filter(|d| !d.is_unit()) else {
        return Ok(None);
    };
    let algos = ["AES256", "aws:kms", "aws:kms:dsse"];
    let check = |a: &str| -> Result<String, HostError> {
        if algos.contains(&a) {
            Ok(a.to_string())
        } else {
            Err(HostError::input(format!(
                "encryption `{a}` is not one of {}",
                algos.map(|a| format!("`{a}`")).join(", ")
            )))
        }
    };
    if let Ok(b) = d.as_bool() {
        return Ok(b.then(|| json!({"algorithm": "AES256"})));
    }
    if d.is_string() {
        return Ok(Some(json!({"algorithm": check(&d.to_string())?})));
    }
    if let Some(m) = d.read_lock::<Map>() {
        check_keys(
            "encryption of aws::s3::ensure_bucket",
            &m,
            &["algorithm", "kms_key", "bucket_key"],
        )?;
        let algorithm = opt::<String>(&m, "algorithm")?.unwrap_or_else(|| "aws:kms".into());
        let mut v = json!({"algorithm": check(&algorithm)?});
        if let Some(k) = opt::<String>(&m, "kms_key")? {
            v["kms_key"] = json!(k);
        }
        if let Some(b) = opt::<bool>(&m, "bucket_key")? {
            v["bucket_key"] = json!(b);
        }
        return Ok(Some(v));
    }
    Err(HostError::input(format!(
        "option `encryption` must be a bool, an algorithm name or a map, not `{}`",
        d.type_name()
    )))
}

fn block_json(b: bool) -> Value {
    json!({
        "block_public_acls": b,
        "ignore_public_acls": b,
        "block_public_policy": b,
        "restrict_public_buckets": b,
    })
}

fn versioning_word(v: bool) -> &'static str {
    if v { "Enabled" } else { "Suspended" }
}

fn desired_json(name: &str, spec: &Spec) -> Value {
    let mut d = json!({"name": name, "region": spec.region});
    if let Some(e) = &spec.encryption {
        d["encryption"] = e.clone();
    }
    if let Some(b) = spec.block_public {
        d["block_public"] = block_json(b);
    }
    if let Some(v) = spec.versioning {
        d["versioning"] = json!(versioning_word(v));
    }
    if let Some(t) = &spec.tags {
        d["tags"] = Value::Object(t.iter().map(|(k, v)| (k.clone(), json!(v))).collect());
    }
    d
}

/// The region of bucket `name` owned by `account` (HeadBucket, asked in `region`), or `None`
/// when no such bucket exists. A bucket of another account (403) is an error.
async fn head_region(
    c: &crate::aws::Clients,
    account: &str,
    name: &str,
    region: &str,
) -> Result<Option<String>, HostError> {
    let op = "s3:HeadBucket";
    let s3 = c.s3(region);
    match s3
        .head_bucket()
        .bucket(name)
        .expected_bucket_owner(account)
        .send()
        .await
    {
        Ok(out) => Ok(Some(out.bucket_region().unwrap_or(region).to_string())),
        Err(e) => {
            let region_header = e
                .raw_response()
                .and_then(|r| r.headers().get("x-amz-bucket-region"))
                .map(str::to_string);
            match status(&e) {
                Some(404) => Ok(None),
                Some(403) => Err(HostError::new(
                    ErrorKind::Conflict,
                    format!("S3 bucket `{name}` exists but is owned by another account, or these credentials may not read it (`{op}`: HTTP 403)"),
                )
                .with_hint("bucket names are global across all AWS accounts: choose another name, e.g. with the account id in it")),
                Some(301) if region_header.is_some() => Ok(region_header),
                _ => Err(sdk_error(c, op, name, e)),
            }
        }
    }
}

/// The bucket as it is: `None` when absent. Errors when it belongs to someone else.
fn read_bucket(
    host: &Host,
    c: &crate::aws::Clients,
    account: &str,
    name: &str,
    spec: &Spec,
) -> Result<Option<Value>, HostError> {
    host.read(&format!("s3:HeadBucket {name}"), async {
        // The HEAD and the settings the script sets, in one round: the HEAD decides whether
        // the bucket is there (the settings' reads of an absent bucket fail and are dropped).
        let s3 = c.s3(&spec.region);
        let encryption = async {
            if spec.encryption.is_none() {
                return Ok(None);
            }
            let op = "s3:GetBucketEncryption";
            Ok(Some(match s3.get_bucket_encryption().bucket(name).send().await {
                Ok(out) => out
                    .server_side_encryption_configuration()
                    .and_then(|c| c.rules().first())
                    .map(|r| {
                        let by_default = r.apply_server_side_encryption_by_default();
                        let mut v = json!({
                            "algorithm": by_default.map(|d| d.sse_algorithm().as_str()),
                        });
                        if let Some(k) = by_default.and_then(|d| d.kms_master_key_id()) {
                            v["kms_key"] = json!(k);
                        }
                        if let Some(b) = r.bucket_key_enabled() {
                            v["bucket_key"] = json!(b);
                        }
                        v
                    })
                    .unwrap_or(Value::Null),
                Err(e) if has_code(&e, "ServerSideEncryptionConfigurationNotFoundError") => Value::Null,
                Err(e) => return Err(sdk_error(c, op, name, e)),
            }))
        };
        let block_public = async {
            if spec.block_public.is_none() {
                return Ok(None);
            }
            let op = "s3:GetPublicAccessBlock";
            Ok(Some(match s3.get_public_access_block().bucket(name).send().await {
                Ok(out) => {
                    let c = out.public_access_block_configuration();
                    json!({
                        "block_public_acls": c.and_then(|c| c.block_public_acls()).unwrap_or(false),
                        "ignore_public_acls": c.and_then(|c| c.ignore_public_acls()).unwrap_or(false),
                        "block_public_policy": c.and_then(|c| c.block_public_policy()).unwrap_or(false),
                        "restrict_public_buckets": c.and_then(|c| c.restrict_public_buckets()).unwrap_or(false),
                    })
                }
                Err(e) if has_code(&e, "NoSuchPublicAccessBlockConfiguration") => block_json(false),
                Err(e) => return Err(sdk_error(c, op, name, e)),
            }))
        };
        let versioning = async {
            if spec.versioning.is_none() {
                return Ok(None);
            }
            let op = "s3:GetBucketVersioning";
            let status = match s3.get_bucket_versioning().bucket(name).send().await {
                Ok(out) => out.status().map(|s| s.as_str().to_string()),
                // S3-compatible servers (moto) name the root element differently, which the SDK
                // refuses; the status element is the same.
                Err(e) if status(&e) == Some(200) => e
                    .raw_response()
                    .and_then(|r| r.body().bytes())
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|t| t.split("<Status>").nth(1))
                    .and_then(|t| t.split("</Status>").next())
                    .map(str::to_string),
                Err(e) => return Err(sdk_error(c, op, name, e)),
            };
            // A bucket never versioned has no status; for "off" that is the same as Suspended.
            Ok(Some(json!(status.as_deref().unwrap_or("Suspended"))))
        };
        let tags = async {
            if spec.tags.is_none() {
                return Ok(None);
            }
            let op = "s3:GetBucketTagging";
            Ok(Some(match s3.get_bucket_tagging().bucket(name).send().await {
                Ok(out) => Value::Object(
                    out.tag_set()
                        .iter()
                        .map(|t| (t.key().to_string(), json!(t.value())))
                        .collect(),
                ),
                Err(e) if has_code(&e, "NoSuchTagSet") || has_code(&e, "NoSuchTagSetError") => json!({}),
                Err(e) => return Err(sdk_error(c, op, name, e)),
            }))
        };
        type Setting = Result<Option<Value>, HostError>;
        let (head, encryption, block_public, versioning, tags): (_, Setting, Setting, Setting, Setting) = futures::join!(
            head_region(c, account, name, &spec.region),
            encryption,
            block_public,
            versioning,
            tags
        );
        let Some(live_region) = head? else {
            return Ok(None);
        };
        if live_region != spec.region {
            return Err(HostError::new(
                ErrorKind::Conflict,
                format!("S3 bucket `{name}` is in region `{live_region}`, not `{}`", spec.region),
            )
            .with_hint("a bucket's region cannot change: set `region` to where it is, or choose another name"));
        }
        let mut live = json!({"name": name, "region": live_region});
        for (key, value) in [
            ("encryption", encryption?),
            ("block_public", block_public?),
            ("versioning", versioning?),
            ("tags", tags?),
        ] {
            if let Some(v) = value {
                live[key] = v;
            }
        }
        Ok(Some(live))
    })
}

fn ensure_bucket(ctx: &NativeCallContext, name: &str, opts: &Map) -> RhaiResult<Map> {
    check_keys("aws::s3::ensure_bucket", opts, OPTIONS)?;
    if name.len() < 3
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Err(HostError::input(format!(
            "`{name}` is not a valid S3 bucket name (3 to 63 lowercase letters, digits, `-`, `.`)"
        ))
        .into());
    }
    let host = Host::of(ctx)?;
    let c = &*clients(&host)?;
    let spec = Spec {
        region: opt::<String>(opts, "region")?.unwrap_or_else(|| c.region.clone()),
        encryption: encryption_spec(opts.get("encryption"))?,
        block_public: opt::<bool>(opts, "block_public")?,
        versioning: opt::<bool>(opts, "versioning")?,
        tags: Tags::non_empty(opt::<Tags>(opts, "tags")?),
    };
    let id = identity(&host, c)?;
    let bucket = Bucket {
        c,
        account: id.account.clone(),
        arn: format!("arn:{}:s3:::{name}", id.partition),
        desired: desired_json(name, &spec),
        name,
        spec,
    };
    let done = converge::ensure(&host, &bucket)?;
    let mut out = done.change.outcome(from_json(&done.object));
    out.insert("arn".into(), bucket.arn.clone().into());
    out.insert("region".into(), bucket.spec.region.clone().into());
    Ok(out)
}

/// The bucket the script asks for, as a converge resource.
struct Bucket<'a> {
    c: &'a crate::aws::Clients,
    account: String,
    name: &'a str,
    spec: Spec,
    /// What the diff compares: only the fields the script set.
    desired: Value,
    arn: String,
}

impl Bucket<'_> {
    /// The bucket as it is now (or would be): live merged with what the script set.
    fn merged(&self, live: Option<&Value>) -> Value {
        let mut object = live.cloned().unwrap_or_else(|| json!({}));
        if let (Value::Object(o), Value::Object(d)) = (&mut object, &self.desired) {
            for (k, v) in d {
                if k == "tags" {
                    let tags = o.entry("tags").or_insert_with(|| json!({}));
                    for (tk, tv) in v.as_object().into_iter().flatten() {
                        tags[tk] = tv.clone();
                    }
                } else {
                    o.insert(k.clone(), v.clone());
                }
            }
        }
        object["arn"] = json!(self.arn);
        object
    }
}

impl Resource for Bucket<'_> {
    type State = Option<Value>;
    type Object = Value;

    fn kind(&self) -> String {
        "aws.s3.bucket".into()
    }
    fn name(&self) -> String {
        self.name.to_string()
    }
    fn read(&self, host: &Host) -> Result<Option<Value>, HostError> {
        read_bucket(host, self.c, &self.account, self.name, &self.spec)
    }
    fn exists(&self, live: &Option<Value>) -> bool {
        live.is_some()
    }
    fn diff(&self, _: &Host, live: &Option<Value>) -> Result<Planned, HostError> {
        Ok(Planned::fields(diff::diff(
            &self.desired,
            live.as_ref(),
            &|_| false,
        )))
    }
    fn current(&self, live: &Option<Value>) -> Value {
        self.merged(live.as_ref())
    }
    /// Creates the bucket and sets what the script asked for (`update` runs the same, with the
    /// bucket there: only what differs is set).
    fn create(
        &self,
        host: &Host,
        live: &Option<Value>,
        planned: &mut Planned,
    ) -> Result<Applied<Value>, HostError> {
        apply(host, self.c, self.name, &self.spec, live.as_ref(), planned)?;
        Ok(Applied::Done(self.merged(live.as_ref())))
    }
}

fn apply(
    host: &Host,
    c: &crate::aws::Clients,
    name: &str,
    spec: &Spec,
    live: Option<&Value>,
    planned: &Planned,
) -> Result<(), HostError> {
    let s3 = c.s3(&spec.region);
    let creating = live.is_none();
    if creating {
        let op = "s3:CreateBucket";
        // us-east-1 is the one region that must not be named as a LocationConstraint.
        let conf = (spec.region != "us-east-1").then(|| {
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(spec.region.as_str()))
                .build()
        });
        host.mutate(&format!("{op} {name}"), async {
            match s3.create_bucket().bucket(name).set_create_bucket_configuration(conf).send().await {
                Ok(_) => Ok(()),
                Err(e) if has_code(&e, "BucketAlreadyOwnedByYou") => Ok(()),
                Err(e) if has_code(&e, "BucketAlreadyExists") => Err(HostError::new(
                    ErrorKind::Conflict,
                    format!(
                        "S3 bucket name `{name}` is taken by another account (`{op}`: BucketAlreadyExists, HTTP {})",
                        status(&e).unwrap_or(409)
                    ),
                )
                .with_hint("bucket names are global across all AWS accounts: choose another name, e.g. with the account id in it")),
                Err(e) => Err(sdk_error(c, op, name, e)),
            }
        })?;
    }
    let wants = |field: &str| creating || planned.touches(field);
    if let Some(enc) = spec.encryption.as_ref().filter(|_| wants("encryption")) {
        let op = "s3:PutBucketEncryption";
        let by_default = ServerSideEncryptionByDefault::builder()
            .sse_algorithm(ServerSideEncryption::from(
                enc["algorithm"].as_str().unwrap_or("AES256"),
            ))
            .set_kms_master_key_id(enc["kms_key"].as_str().map(str::to_string))
            .build()
            .map_err(|e| HostError::input(format!("encryption of `{name}`: {e}")))?;
        let rule = ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(by_default)
            .set_bucket_key_enabled(enc["bucket_key"].as_bool())
            .build();
        let conf = ServerSideEncryptionConfiguration::builder()
            .rules(rule)
            .build()
            .map_err(|e| HostError::input(format!("encryption of `{name}`: {e}")))?;
        host.mutate(&format!("{op} {name}"), async {
            s3.put_bucket_encryption()
                .bucket(name)
                .server_side_encryption_configuration(conf)
                .send()
                .await
                .map_err(|e| sdk_error(c, op, name, e))
        })?;
    }
    if let Some(b) = spec.block_public.filter(|_| wants("block_public")) {
        let op = "s3:PutPublicAccessBlock";
        let conf = PublicAccessBlockConfiguration::builder()
            .block_public_acls(b)
            .ignore_public_acls(b)
            .block_public_policy(b)
            .restrict_public_buckets(b)
            .build();
        host.mutate(&format!("{op} {name}"), async {
            s3.put_public_access_block()
                .bucket(name)
                .public_access_block_configuration(conf)
                .send()
                .await
                .map_err(|e| sdk_error(c, op, name, e))
        })?;
    }
    if let Some(v) = spec
        .versioning
        .filter(|v| wants("versioning") && (*v || !creating))
    {
        let op = "s3:PutBucketVersioning";
        let conf = VersioningConfiguration::builder()
            .status(BucketVersioningStatus::from(versioning_word(v)))
            .build();
        host.mutate(&format!("{op} {name}"), async {
            s3.put_bucket_versioning()
                .bucket(name)
                .versioning_configuration(conf)
                .send()
                .await
                .map_err(|e| sdk_error(c, op, name, e))
        })?;
    }
    if let Some(tags) = spec.tags.as_ref().filter(|_| wants("tags")) {
        // PutBucketTagging replaces the whole set: keep the tags the script does not set.
        let mut all: Vec<(String, String)> = live
            .and_then(|l| l["tags"].as_object())
            .into_iter()
            .flatten()
            .filter(|(k, _)| !tags.iter().any(|(t, _)| t == *k))
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        all.extend(tags.iter().cloned());
        let set = all
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| HostError::input(format!("tags of `{name}`: {e}")))?;
        let tagging = Tagging::builder()
            .set_tag_set(Some(set))
            .build()
            .map_err(|e| HostError::input(format!("tags of `{name}`: {e}")))?;
        let op = "s3:PutBucketTagging";
        host.mutate(&format!("{op} {name}"), async {
            s3.put_bucket_tagging()
                .bucket(name)
                .tagging(tagging)
                .send()
                .await
                .map_err(|e| sdk_error(c, op, name, e))
        })?;
    }
    Ok(())
}

/// A bucket to delete, emptied first when asked (every object version and delete marker).
struct Gone<'a> {
    c: &'a crate::aws::Clients,
    account: String,
    name: &'a str,
    empty: bool,
}

/// A bucket about to be deleted: its region, and with `empty` how many object versions (and
/// delete markers) go with it.
struct Found {
    region: String,
    versions: Option<usize>,
}

impl Gone<'_> {
    /// Every object version and delete marker of the bucket, as (key, version id).
    async fn versions(
        &self,
        s3: &aws_sdk_s3::Client,
    ) -> Result<Vec<(String, Option<String>)>, HostError> {
        let (c, name) = (self.c, self.name);
        let op = "s3:ListObjectVersions";
        let mut out = Vec::new();
        // No paginator in the SDK for this one: follow the two markers by hand.
        let (mut key, mut version) = (None, None);
        loop {
            let page = s3
                .list_object_versions()
                .bucket(name)
                .set_key_marker(key)
                .set_version_id_marker(version)
                .send()
                .await
                .map_err(|e| sdk_error(c, op, name, e))?;
            for v in page.versions() {
                out.push((
                    v.key().unwrap_or_default().to_string(),
                    v.version_id().map(str::to_string),
                ));
            }
            for m in page.delete_markers() {
                out.push((
                    m.key().unwrap_or_default().to_string(),
                    m.version_id().map(str::to_string),
                ));
            }
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            key = page.next_key_marker().map(str::to_string);
            version = page.next_version_id_marker().map(str::to_string);
        }
    }
}

impl Resource for Gone<'_> {
    type State = Option<Found>;
    type Object = Value;

    fn kind(&self) -> String {
        "aws.s3.bucket".into()
    }
    fn name(&self) -> String {
        self.name.to_string()
    }
    fn read(&self, host: &Host) -> Result<Option<Found>, HostError> {
        let region = self.c.region.clone();
        host.read(&format!("s3:HeadBucket {}", self.name), async {
            let Some(region) = head_region(self.c, &self.account, self.name, &region).await? else {
                return Ok(None);
            };
            let versions = if self.empty {
                Some(self.versions(&self.c.s3(&region)).await?.len())
            } else {
                None
            };
            Ok(Some(Found { region, versions }))
        })
    }
    fn exists(&self, found: &Option<Found>) -> bool {
        found.is_some()
    }
    fn current(&self, found: &Option<Found>) -> Value {
        match found {
            Some(f) => json!({"name": self.name, "region": f.region}),
            None => Value::Null,
        }
    }
    fn deletion_fields(&self, found: &Option<Found>) -> Vec<FieldChange> {
        match found.as_ref().and_then(|f| f.versions) {
            Some(n) if n > 0 => vec![FieldChange {
                path: "objects".into(),
                before: Some(json!(format!("{n} object versions and delete markers"))),
                after: None,
            }],
            _ => Vec::new(),
        }
    }
    fn delete(&self, host: &Host, found: &Option<Found>) -> Result<(), HostError> {
        let (c, name) = (self.c, self.name);
        let Some(found) = found else { return Ok(()) };
        let s3 = c.s3(&found.region);
        if self.empty {
            let versions =
                host.read(&format!("s3:ListObjectVersions {name}"), self.versions(&s3))?;
            // DeleteObjects takes at most 1000 keys per call.
            for chunk in versions.chunks(1000) {
                let objects = chunk
                    .iter()
                    .map(|(k, v)| {
                        aws_sdk_s3::types::ObjectIdentifier::builder()
                            .key(k)
                            .set_version_id(v.clone())
                            .build()
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| HostError::input(format!("objects of `{name}`: {e}")))?;
                let delete = aws_sdk_s3::types::Delete::builder()
                    .set_objects(Some(objects))
                    .quiet(true)
                    .build()
                    .map_err(|e| HostError::input(format!("objects of `{name}`: {e}")))?;
                let op = "s3:DeleteObjects";
                let out = host.mutate(&format!("{op} {name}"), async {
                    s3.delete_objects()
                        .bucket(name)
                        .delete(delete)
                        .send()
                        .await
                        .map_err(|e| sdk_error(c, op, name, e))
                })?;
                if let Some(e) = out.errors().first() {
                    return Err(HostError::api(format!(
                        "`{op}` could not delete `{}` from S3 bucket `{name}`: {} ({})",
                        e.key().unwrap_or_default(),
                        e.message().unwrap_or_default(),
                        e.code().unwrap_or_default()
                    )));
                }
            }
        }
        let op = "s3:DeleteBucket";
        host.mutate(&format!("{op} {name}"), async {
            match s3.delete_bucket().bucket(name).send().await {
                Err(e) if has_code(&e, "NoSuchBucket") => Ok(()),
                Err(e) if has_code(&e, "BucketNotEmpty") => Err(HostError::new(
                    ErrorKind::Conflict,
                    format!("S3 bucket `{name}` is not empty (`{op}`: BucketNotEmpty)"),
                )
                .with_hint("pass `#{ empty: true }` to delete every object version first (the data is lost)")),
                other => other.map(|_| ()).map_err(|e| sdk_error(c, op, name, e)),
            }
        })
    }
}

fn delete_bucket(ctx: &NativeCallContext, name: &str, opts: &Map) -> RhaiResult<Map> {
    check_keys("aws::s3::delete_bucket", opts, &["empty"])?;
    let empty = opt::<bool>(opts, "empty")?.unwrap_or(false);
    let host = Host::of(ctx)?;
    let c = &*clients(&host)?;
    let account = identity(&host, c)?.account;
    let gone = converge::remove(
        &host,
        &Gone {
            c,
            account,
            name,
            empty,
        },
        Value::Null,
    )?;
    let object = if gone.object.is_null() {
        Dynamic::UNIT
    } else {
        from_json(&gone.object)
    };
    Ok(gone.change.outcome(object))
}

#[export_module]
pub mod s3_module {
    use super::*;

    /// Ensures an S3 bucket: created when absent (in `region`, default the run's region; the
    /// us-east-1 LocationConstraint quirk handled), then `encryption` (`true`/`"AES256"`,
    /// `"aws:kms"`, `"aws:kms:dsse"` or `#{algorithm, kms_key, bucket_key}`), `block_public`
    /// (all four public-access-block settings), `versioning` (bool) and `tags` (added or
    /// changed; others kept) are set when they differ. A name owned by another account is a
    /// `conflict` error. Returns `#{arn, region, changed, object, diff}`.
    ///
    /// ```rhai
    /// let bucket = aws::s3::ensure_bucket(`collate-argo-artifacts-${aws::region()}`, #{
    ///     encryption: "AES256",
    ///     block_public: true,
    /// });
    /// print(bucket.changed);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn ensure_bucket(ctx: NativeCallContext, name: &str, opts: Map) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        super::ensure_bucket(&ctx, name, &opts)
    }

    /// Deletes an S3 bucket. A bucket with objects is refused (`conflict`) unless `empty: true`,
    /// which deletes every object version and delete marker first (the data is lost; a plan
    /// says how many). An absent bucket is `unchanged`. Returns `#{changed, object, diff}`.
    ///
    /// ```rhai
    /// aws::s3::delete_bucket("collate-argo-artifacts-eu-west-1", #{ empty: true });
    /// ```
    #[rhai_fn(return_raw)]
    pub fn delete_bucket(ctx: NativeCallContext, name: &str, opts: Map) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        super::delete_bucket(&ctx, name, &opts)
    }

    /// `ensure_bucket` with no options: the bucket exists in the run's region.
    ///
    /// ```rhai
    /// aws::s3::ensure_bucket("collate-argo-artifacts-eu-west-1");
    /// ```
    #[rhai_fn(name = "ensure_bucket", return_raw)]
    pub fn ensure_bucket_plain(ctx: NativeCallContext, name: &str) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        super::ensure_bucket(&ctx, name, &Map::new())
    }

    /// `true` when the bucket exists and belongs to the account of the run; a bucket owned by
    /// another account is a `conflict` error.
    ///
    /// ```rhai
    /// if !aws::s3::bucket_exists("collate-argo-artifacts-eu-west-1") { print("missing"); }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn bucket_exists(ctx: NativeCallContext, name: &str) -> RhaiResult<bool> {
        let host = Host::of(&ctx)?;
        let c = &*clients(&host)?;
        let account = identity(&host, c)?.account;
        // A bucket in another region exists too.
        let found = host.read(
            &format!("s3:HeadBucket {name}"),
            head_region(c, &account, name, &c.region),
        )?;
        Ok(found.is_some())
    }
}
