//! The `aws` namespaces against moto: every function in plan and apply mode, idempotence, a
//! trust policy compared as JSON, plan mode leaving moto untouched, the OIDC thumbprint taken
//! from a test issuer's TLS chain, clear errors (with the operation, the resource and the HTTP
//! status, never a credential) for missing credentials, region, cluster, foreign buckets,
//! untrusted issuers, refused and failing calls and unreachable endpoints, ECR passwords never
//! shown, and the guide's AWS steps end to end through aws-sdk-rust with an endpoint override.

use collate_run_tests::fault_proxy::{Fault, FaultProxy, Faults};
use collate_run_tests::moto::{ACCOUNT, Moto, REGION};
use collate_run_tests::tls_server::TlsServer;
use collate_run_tests::{Output, Run, needs};
use serde_json::Value;

const CLUSTER: &str = "collate-eks";
const REGISTRY: &str = "118146679784.dkr.ecr.eu-west-1.amazonaws.com";
const S3_FULL: &str = "arn:aws:iam::aws:policy/AmazonS3FullAccess";
const S3_READ: &str = "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess";

fn run(moto: &Moto, script: &str) -> Run {
    Run::script(script).envs(moto.env())
}

/// `(kind, name, action)` of each journal entry of a JSON run.
fn actions(out: &Output) -> Vec<(String, String, String)> {
    out.changes()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("kind"), s("name"), s("action"))
        })
        .collect()
}

fn host_path(issuer: &str) -> String {
    issuer.trim_start_matches("https://").to_string()
}

#[test]
fn account_region_and_cluster() {
    needs!("moto");
    let moto = Moto::start();
    let issuer = moto.create_eks_cluster(CLUSTER);
    let out = run(
        &moto,
        &format!(
            r#"
            print(`account=${{aws::account_id()}} region=${{aws::region()}}`);
            let me = aws::sts::caller_identity();
            print(`arn=${{me.arn}}`);
            let c = aws::eks::describe_cluster("{CLUSTER}");
            print(`name=${{c.name}} status=${{c.status}} issuer=${{c.identity.oidc.issuer}}`);
            print(`oidc=${{aws::eks::oidc_issuer("{CLUSTER}")}}`);
            "#
        ),
    )
    .succeeds();
    out.stdout_contains(&format!("account={ACCOUNT} region={REGION}"))
        .stdout_contains(&format!("arn=arn:aws:sts::{ACCOUNT}:"))
        .stdout_contains(&format!("name={CLUSTER} status=ACTIVE issuer={issuer}"))
        .stdout_contains(&format!("oidc={issuer}"));
    assert!(issuer.starts_with("https://oidc.eks.eu-west-1.amazonaws.com/id/"));

    // `--region` overrides the environment; a missing cluster names itself and the region.
    let out = run(&moto, r#"aws::eks::oidc_issuer("no-such-cluster");"#)
        .arg("--region")
        .arg("us-east-2")
        .fails_with(4);
    out.stderr_contains("EKS cluster `no-such-cluster` not found in region `us-east-2`");
    // Not-found is catchable with its kind.
    run(
        &moto,
        r#"try { aws::eks::describe_cluster("nope"); } catch (e) { print(`kind=${e.kind}`); }"#,
    )
    .succeeds()
    .stdout_contains("kind=not_found");
}

#[test]
fn missing_credentials_or_region_is_one_clear_error_before_any_change() {
    needs!("moto");
    let moto = Moto::start();
    let script = r#"
        aws::s3::ensure_bucket("collate-argo-artifacts-eu-west-1");
        aws::iam::ensure_role("r", #{ trust: #{} });
    "#;
    let no_creds: Vec<(String, String)> = moto
        .env()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS_KEY_ID") && !k.starts_with("AWS_SECRET"))
        .collect();
    // A configuration problem, like a missing region: exit 3.
    let out = Run::script(script).envs(no_creds).fails_with(3);
    out.stderr_contains("no AWS credentials found")
        .stderr_contains("AWS_ACCESS_KEY_ID")
        .stderr_contains("--profile");
    assert!(!out.stdout.contains("aws.s3.bucket"), "{out}");

    let no_region: Vec<(String, String)> = moto
        .env()
        .into_iter()
        .filter(|(k, _)| !k.ends_with("REGION"))
        .collect();
    let out = Run::script(script).envs(no_region).fails_with(3);
    out.stderr_contains("no AWS region is set")
        .stderr_contains("--region");
    assert!(moto.bucket_names().is_empty());
    assert!(moto.role_names().is_empty());

    // A named profile that does not exist and no other credentials: one error naming it.
    let bare: Vec<(String, String)> = moto
        .env()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS_KEY_ID") && !k.starts_with("AWS_SECRET"))
        .collect();
    Run::script(script)
        .envs(bare)
        .arg("--profile")
        .arg("ecr-collate")
        .fails_with(3)
        .stderr_contains("profile `ecr-collate`");
}

#[test]
fn oidc_provider_plan_apply_unchanged() {
    needs!("moto");
    let moto = Moto::start();
    let issuer = moto.create_eks_cluster(CLUSTER);
    let hp = host_path(&issuer);
    let arn = format!("arn:aws:iam::{ACCOUNT}:oidc-provider/{hp}");
    let script = format!(
        r#"
        let p = aws::iam::ensure_oidc_provider(aws::eks::oidc_issuer("{CLUSTER}"), #{{ thumbprints: [] }});
        print(`arn=${{p.arn}} changed=${{p.changed}} ids=${{p.object.client_ids}}`);
        let g = aws::iam::get_oidc_provider("{hp}");
        print(`get=${{if g == () {{ "none" }} else {{ g.arn }}}}`);
        "#
    );
    let out = run(&moto, &script).plan().json().succeeds();
    assert_eq!(
        actions(&out),
        vec![("aws.iam.oidc_provider".into(), hp.clone(), "create".into())]
    );
    assert_eq!(out.changes()[0]["planned"], true);
    out.stdout_contains(&format!("arn={arn} changed=created"))
        .stdout_contains("get=none");
    assert!(
        moto.oidc_provider_arns().is_empty(),
        "plan created a provider"
    );

    run(&moto, &script)
        .succeeds()
        .stdout_contains(&format!(
            "arn={arn} changed=created ids=[\"sts.amazonaws.com\"]"
        ))
        .stdout_contains(&format!("get={arn}"));
    assert_eq!(moto.oidc_provider_arns(), vec![arn.clone()]);
    let client_ids = moto.python(&format!(
        "out = c('iam').get_open_id_connect_provider(OpenIDConnectProviderArn='{arn}')['ClientIDList']"
    ));
    assert_eq!(client_ids, serde_json::json!(["sts.amazonaws.com"]));

    let out = run(&moto, &script).json().succeeds();
    assert_eq!(actions(&out)[0].2, "unchanged");
    run(&moto, &script)
        .plan()
        .succeeds()
        .stdout_contains("changed=unchanged");

    // A thumbprint given explicitly that differs is an update.
    let out = run(
        &moto,
        &format!(
            r#"let p = aws::iam::ensure_oidc_provider("{issuer}", #{{ thumbprints: ["9E99A48A9960B14926BB7F3B02E22DA2B0AB7280"] }}); print(p.changed);"#
        ),
    )
    .json()
    .succeeds();
    let change = &out.changes()[0];
    assert_eq!(change["action"], "update");
    assert_eq!(change["fields"][0]["path"], "thumbprints");
    // A bad thumbprint is an input error.
    run(
        &moto,
        &format!(r#"aws::iam::ensure_oidc_provider("{issuer}", #{{ thumbprints: ["abc"] }});"#),
    )
    .fails_with(1)
    .stderr_contains("40 hex digits");
}

/// The thumbprints moto holds for the OIDC provider `arn`.
fn thumbprints_on_moto(moto: &Moto, arn: &str) -> Value {
    moto.python(&format!(
        "out = c('iam').get_open_id_connect_provider(OpenIDConnectProviderArn='{arn}')['ThumbprintList']"
    ))
}

#[test]
fn oidc_provider_thumbprint_comes_from_the_issuer_tls_chain() {
    needs!("moto");
    let moto = Moto::start();
    let tls = TlsServer::start();
    // An issuer with a port and an IP address as its host.
    let issuer = format!("{}/id/C0FFEE", tls.url());
    let arn = format!(
        "arn:aws:iam::{ACCOUNT}:oidc-provider/{}",
        host_path(&issuer)
    );
    let script = format!(
        r#"let p = aws::iam::ensure_oidc_provider("{issuer}"); print(`changed=${{p.changed}} thumbprints=${{p.object.thumbprints}}`);"#
    );
    let root_ca = TlsServer::root_ca_file().display().to_string();
    // Computed here from the fixture's DER, not by the code under test.
    let expected = TlsServer::last_presented_sha1();

    // Without `SSL_CERT_FILE` the system roots do not know the test CA: a clear error before
    // anything is created.
    let out = run(&moto, &script).fails_with(4);
    out.stderr_contains(&format!(
        "cannot take the thumbprint of OIDC issuer `{issuer}`: its TLS certificate chain is not trusted"
    ))
    .stderr_contains("thumbprints: [")
    .stderr_contains("SSL_CERT_FILE");
    assert!(tls.connections() >= 1, "the issuer was not contacted");
    assert_eq!(tls.handshakes(), 0, "a handshake with an untrusted chain");
    assert!(moto.oidc_provider_arns().is_empty(), "created anyway");

    // Trusting the root: created with the SHA-1 of the last certificate presented.
    run(&moto, &script)
        .env("SSL_CERT_FILE", &root_ca)
        .succeeds()
        .stdout_contains(&format!("changed=created thumbprints=[\"{expected}\"]"));
    assert_eq!(tls.handshakes(), 1);
    assert_eq!(moto.oidc_provider_arns(), vec![arn.clone()]);
    assert_eq!(
        thumbprints_on_moto(&moto, &arn),
        serde_json::json!([expected])
    );

    // Present: unchanged, without asking the issuer again.
    let out = run(&moto, &script).json().succeeds();
    assert_eq!(actions(&out)[0].2, "unchanged");
    assert_eq!(tls.handshakes(), 1);

    // An issuer that cannot be reached at all: created without a thumbprint, with a note.
    let closed = collate_run_tests::loopback::free_port();
    let unreachable = format!("https://127.0.0.1:{closed}/id/C0FFEE");
    let out = run(
        &moto,
        &format!(r#"aws::iam::ensure_oidc_provider("{unreachable}");"#),
    )
    .json()
    .succeeds();
    let change = &out.changes()[0];
    assert_eq!(change["action"], "create", "{out}");
    assert!(
        change["note"]
            .as_str()
            .is_some_and(|n| n.contains("no thumbprint") && n.contains("cannot connect")),
        "{change}"
    );
    let arn = format!("arn:aws:iam::{ACCOUNT}:oidc-provider/127.0.0.1:{closed}/id/C0FFEE");
    assert_eq!(thumbprints_on_moto(&moto, &arn), serde_json::json!([]));
}

/// Credentials moto accepts, as canaries: no error may show them.
const KEY_CANARY: &str = "AKIACANARY0123456789";
const SECRET_CANARY: &str = "canary/secret+Access0123456789abcdefghij";

fn canary_credentials() -> [(&'static str, &'static str); 2] {
    [
        ("AWS_ACCESS_KEY_ID", KEY_CANARY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_CANARY),
    ]
}

/// An IAM (query protocol) error document.
fn iam_error(code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>Sender</Type>\
         <Code>{code}</Code><Message>{message}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"
    )
}

#[test]
fn aws_errors_name_operation_resource_and_http_status_never_a_credential() {
    needs!("moto");
    let moto = Moto::start();
    let script = r#"aws::iam::ensure_role("collate-om", #{ trust: #{ Version: "2012-10-17", Statement: [] } });"#;
    // IAM only goes through the proxy (`AWS_ENDPOINT_URL_IAM`); STS and S3 reach moto directly.
    let proxy = FaultProxy::start(
        &moto.endpoint(),
        Faults::always(Fault::Status(403)).body(&iam_error(
            "AccessDenied",
            "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: iam:GetRole",
        )),
    );
    let through_proxy = || {
        run(&moto, script)
            .envs(canary_credentials())
            .env("AWS_ENDPOINT_URL_IAM", &proxy.url())
    };
    let out = through_proxy().fails_with(4);
    out.stderr_contains(
        "`iam:GetRole` on `collate-om` failed: AccessDenied (HTTP 403): User: arn:aws:iam::123456789012:user/ci is not authorized",
    )
    .stderr_contains("aws sts get-caller-identity")
    .never_shows(KEY_CANARY)
    .never_shows(SECRET_CANARY);
    // The role and its two policy lists are read together (one round): three requests, each
    // 403 final at once.
    assert_eq!(proxy.stats().injected, 3, "a 403 is final at once");

    // A 500 on every attempt: retried (5 attempts in all), then the status is named.
    proxy.set(Faults::always(Fault::Status(500)).body(&iam_error(
        "ServiceFailure",
        "Request processing has failed due to some unknown error",
    )));
    let out = through_proxy().fails_with(4);
    out.stderr_contains("`iam:GetRole` on `collate-om` failed: ServiceFailure (HTTP 500)")
        .stderr_contains("retried")
        .never_shows(KEY_CANARY)
        .never_shows(SECRET_CANARY);
    let stats = proxy.stats();
    assert_eq!(
        stats.by_fault.get("500"),
        Some(&15),
        "5 attempts for each of the three reads: {stats:?}"
    );
    assert!(moto.role_names().is_empty());

    // An endpoint nobody listens on: one line with the endpoint and the cause, no SDK dump.
    let closed = collate_run_tests::loopback::free_port();
    let endpoint = format!("http://127.0.0.1:{closed}");
    let out = run(&moto, "aws::account_id();")
        .envs(canary_credentials())
        .env("AWS_ENDPOINT_URL", &endpoint)
        .fails_with(4);
    let first = out.stderr.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!(
            "error: `sts:GetCallerIdentity` on `the caller` failed: cannot reach AWS at `{endpoint}`: Connection refused"
        ),
        "{out}"
    );
    for dump in ["DispatchFailure", "ConnectorError", "os error", "hyper"] {
        out.never_shows(dump);
    }
    out.never_shows(KEY_CANARY).never_shows(SECRET_CANARY);
}

fn role_script(issuer: &str, sa: &str, extra: &str) -> String {
    format!(
        r#"
        let r = aws::iam::ensure_role("collate-server-role", #{{
            trust: aws::iam::irsa_trust("{issuer}", "collate", "{sa}"),
            policies: ["{S3_FULL}"],
            tags: #{{ "managed-by": "collate-run" }},
            {extra}
        }});
        print(`arn=${{r.arn}} changed=${{r.changed}} policies=${{r.object.policies.len()}}`);
        "#
    )
}

#[test]
fn role_plan_apply_unchanged_and_trust_update() {
    needs!("moto");
    let moto = Moto::start();
    let issuer = moto.create_eks_cluster(CLUSTER);
    let hp = host_path(&issuer);
    let arn = format!("arn:aws:iam::{ACCOUNT}:role/collate-server-role");

    let out = run(&moto, &role_script(&issuer, "openmetadata", ""))
        .plan()
        .json()
        .succeeds();
    assert_eq!(actions(&out)[0].2, "create");
    out.stdout_contains(&format!("arn={arn} changed=created policies=1"));
    assert!(moto.role_names().is_empty(), "plan created a role");

    run(&moto, &role_script(&issuer, "openmetadata", ""))
        .succeeds()
        .stdout_contains(&format!("arn={arn} changed=created policies=1"));
    let attached = moto.python(
        "out = [p['PolicyArn'] for p in c('iam').list_attached_role_policies(RoleName='collate-server-role')['AttachedPolicies']]",
    );
    assert_eq!(attached, serde_json::json!([S3_FULL]));
    let trust = moto.python(
        "out = c('iam').get_role(RoleName='collate-server-role')['Role']['AssumeRolePolicyDocument']",
    );
    let cond = &trust["Statement"][0]["Condition"]["StringEquals"];
    assert_eq!(
        cond[format!("{hp}:sub")],
        "system:serviceaccount:collate:openmetadata"
    );
    assert_eq!(cond[format!("{hp}:aud")], "sts.amazonaws.com");
    assert_eq!(
        trust["Statement"][0]["Principal"]["Federated"],
        format!("arn:aws:iam::{ACCOUNT}:oidc-provider/{hp}")
    );

    // Second run: unchanged, in both modes.
    let out = run(&moto, &role_script(&issuer, "openmetadata", ""))
        .json()
        .succeeds();
    assert_eq!(actions(&out)[0].2, "unchanged");
    out.stdout_contains("changed=unchanged");

    // Another ServiceAccount: the trust policy is updated, with the field in the journal.
    let out = run(&moto, &role_script(&issuer, "om-role", ""))
        .plan()
        .json()
        .succeeds();
    let change = &out.changes()[0];
    assert_eq!(change["action"], "update");
    let fields = change["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 1, "{change}");
    assert!(
        fields[0]["path"].as_str().unwrap().ends_with(":sub\"]"),
        "{change}"
    );
    assert_eq!(
        fields[0]["before"],
        "system:serviceaccount:collate:openmetadata"
    );
    assert_eq!(fields[0]["after"], "system:serviceaccount:collate:om-role");
    let trust_now = || {
        moto.python("out = c('iam').get_role(RoleName='collate-server-role')['Role']['AssumeRolePolicyDocument']")
            ["Statement"][0]["Condition"]["StringEquals"][format!("{hp}:sub")]
            .clone()
    };
    assert_eq!(trust_now(), "system:serviceaccount:collate:openmetadata");
    let out = run(&moto, &role_script(&issuer, "om-role", ""))
        .json()
        .succeeds();
    assert_eq!(out.changes()[0]["action"], "update");
    assert_eq!(trust_now(), "system:serviceaccount:collate:om-role");
    run(&moto, &role_script(&issuer, "om-role", ""))
        .succeeds()
        .stdout_contains("changed=unchanged");

    // Inline policies are put; `exclusive` detaches and deletes what the script does not list.
    let inline = r#"inline: #{ artifacts: #{ Version: "2012-10-17", Statement: [#{ Effect: "Allow", Action: ["s3:GetObject", "s3:PutObject"], Resource: "arn:aws:s3:::collate-argo-artifacts-eu-west-1/*" }] } },"#;
    moto.python(&format!(
        "c('iam').attach_role_policy(RoleName='collate-server-role', PolicyArn='{S3_READ}')"
    ));
    let out = run(&moto, &role_script(&issuer, "om-role", inline))
        .json()
        .succeeds();
    assert_eq!(out.changes()[0]["action"], "update");
    let names = moto
        .python("out = c('iam').list_role_policies(RoleName='collate-server-role')['PolicyNames']");
    assert_eq!(names, serde_json::json!(["artifacts"]));
    run(&moto, &role_script(&issuer, "om-role", inline))
        .succeeds()
        .stdout_contains("changed=unchanged policies=2");
    let out = run(&moto, &role_script(&issuer, "om-role", "exclusive: true,"))
        .plan()
        .json()
        .succeeds();
    let paths: Vec<String> = out.changes()[0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert!(
        paths.contains(&format!("policies[\"{S3_READ}\"]")),
        "{paths:?}"
    );
    assert!(paths.contains(&"inline.artifacts".to_string()), "{paths:?}");
    run(&moto, &role_script(&issuer, "om-role", "exclusive: true,"))
        .succeeds()
        .stdout_contains("changed=updated policies=1");
    let names = moto
        .python("out = c('iam').list_role_policies(RoleName='collate-server-role')['PolicyNames']");
    assert_eq!(names, serde_json::json!([]));

    // get_role and role_arn.
    run(
        &moto,
        r#"let r = aws::iam::get_role("collate-server-role");
           print(`policies=${r.policies} tag=${r.tags["managed-by"]}`);
           print(`none=${aws::iam::get_role("nope") == ()} arn=${aws::iam::role_arn("x")}`);
           print(`under=${aws::iam::role_arn("x", "/collate/")}`);"#,
    )
    .succeeds()
    .stdout_contains(S3_FULL)
    .stdout_contains("tag=collate-run")
    .stdout_contains(&format!("none=true arn=arn:aws:iam::{ACCOUNT}:role/x"))
    .stdout_contains(&format!("under=arn:aws:iam::{ACCOUNT}:role/collate/x"));
    run(&moto, r#"aws::iam::role_arn("x", "collate");"#)
        .fails_with(1)
        .stderr_contains("must start and end with `/`");

    // Unknown options are refused with a suggestion.
    run(
        &moto,
        r#"aws::iam::ensure_role("x", #{ trust: #{}, polices: [] });"#,
    )
    .fails_with(1)
    .stderr_contains("did you mean `policies`");
}

/// The permissions boundary converges (put, replaced, removed with `""`), `path` is the path of
/// a new role and an existing role under another path is a conflict (in a plan too: IAM cannot
/// move a role), a tag whose value is `()` is removed; a second run changes nothing.
#[test]
fn role_boundary_path_and_tag_removal_converge() {
    needs!("moto");
    let moto = Moto::start();
    let issuer = moto.create_eks_cluster(CLUSTER);
    let boundary = |name: &str| format!("arn:aws:iam::{ACCOUNT}:policy/{name}");
    moto.python(
        "for n in ['CollateBoundary', 'OtherBoundary']:\n    c('iam').create_policy(PolicyName=n, PolicyDocument=json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': 's3:*', 'Resource': '*'}]}))\nout = 1",
    );
    let script = |boundary: &str, path: &str, tags: &str| {
        format!(
            r#"let r = aws::iam::ensure_role("collate-server-role", #{{
                trust: aws::iam::irsa_trust("{issuer}", "collate", "openmetadata"),
                permissions_boundary: "{boundary}", path: "{path}",
                tags: #{{ "managed-by": "collate-run", {tags} }},
            }});
            print(`arn=${{r.arn}} changed=${{r.changed}}`);"#
        )
    };
    let live = || {
        moto.python(
            "r = c('iam').get_role(RoleName='collate-server-role')['Role']\n\
             out = {'arn': r['Arn'], 'path': r['Path'], 'boundary': r.get('PermissionsBoundary', {}).get('PermissionsBoundaryArn'), \
             'tags': {t['Key']: t['Value'] for t in r.get('Tags', [])}}",
        )
    };
    let first = script(
        &boundary("CollateBoundary"),
        "/collate/",
        r#"team: "data", env: "prod","#,
    );
    let arn = format!("arn:aws:iam::{ACCOUNT}:role/collate/collate-server-role");
    run(&moto, &first)
        .plan()
        .succeeds()
        .stdout_contains(&format!("arn={arn} changed=created"));
    assert!(moto.role_names().is_empty(), "plan created a role");
    run(&moto, &first)
        .succeeds()
        .stdout_contains(&format!("arn={arn} changed=created"));
    let r = live();
    assert_eq!(r["arn"], arn.as_str());
    assert_eq!(r["path"], "/collate/");
    assert_eq!(r["boundary"], boundary("CollateBoundary").as_str());
    assert_eq!(r["tags"]["team"], "data");
    run(&moto, &first)
        .succeeds()
        .stdout_contains("changed=unchanged");

    // Another boundary: planned as that one field, then put.
    let other = script(&boundary("OtherBoundary"), "/collate/", "");
    let out = run(&moto, &other).plan().json().succeeds();
    let fields = out.changes()[0]["fields"].clone();
    assert_eq!(fields[0]["path"], "permissions_boundary", "{fields}");
    assert_eq!(fields[0]["after"], boundary("OtherBoundary").as_str());
    assert_eq!(live()["boundary"], boundary("CollateBoundary").as_str());
    run(&moto, &other)
        .succeeds()
        .stdout_contains("changed=updated");
    assert_eq!(live()["boundary"], boundary("OtherBoundary").as_str());

    // `""` removes the boundary; `()` removes a tag, the tags not named stay.
    let none = script("", "/collate/", "team: (),");
    run(&moto, &none)
        .succeeds()
        .stdout_contains("changed=updated");
    let r = live();
    assert!(r["boundary"].is_null(), "{r}");
    assert_eq!(
        r["tags"],
        serde_json::json!({"managed-by": "collate-run", "env": "prod"})
    );
    run(&moto, &none)
        .succeeds()
        .stdout_contains("changed=unchanged");

    // Another path: IAM cannot move a role; said before any change, in a plan too.
    for plan in [true, false] {
        let mut r = run(&moto, &script("", "/platform/", ""));
        if plan {
            r = r.plan();
        }
        r.fails_with(4)
            .stderr_contains(
                "IAM role `collate-server-role` exists with path `/collate/`, not `/platform/`",
            )
            .stderr_contains("delete the role");
    }
    assert_eq!(live()["path"], "/collate/");
    // A boundary that is not a policy ARN is refused.
    run(&moto, &script("DeveloperBoundary", "/collate/", ""))
        .fails_with(1)
        .stderr_contains("not a managed policy ARN");
}

/// Tags on the OIDC provider converge (set, changed, `()` removes, others stay), and the ARNs
/// predicted and made are in the partition of the caller (moto answers `aws-cn` for a China
/// region: `aws::sts::caller_identity().partition`).
#[test]
fn oidc_provider_tags_converge_in_the_callers_partition() {
    needs!("moto");
    let moto = Moto::start();
    let region = "cn-north-1";
    let issuer = moto.python(&format!(
        "r = c('eks', region='{region}').create_cluster(name='{CLUSTER}', roleArn='arn:aws-cn:iam::{ACCOUNT}:role/eks', \
         resourcesVpcConfig={{'subnetIds': ['subnet-1']}})\nout = r['cluster']['identity']['oidc']['issuer']"
    ));
    let hp = host_path(issuer.as_str().unwrap());
    let arn = format!("arn:aws-cn:iam::{ACCOUNT}:oidc-provider/{hp}");
    let ensure = |tags: &str| {
        run(
            &moto,
            &format!(
                r#"print(`partition=${{aws::sts::caller_identity().partition}}`);
                let p = aws::iam::ensure_oidc_provider(aws::eks::oidc_issuer("{CLUSTER}"), #{{ thumbprints: [], tags: #{{ {tags} }} }});
                print(`arn=${{p.arn}} changed=${{p.changed}}`);"#
            ),
        )
        .env("AWS_REGION", region)
    };
    let tags_on_moto = || {
        moto.python(&format!(
            "out = {{t['Key']: t['Value'] for t in c('iam', region='{region}').list_open_id_connect_provider_tags(OpenIDConnectProviderArn='{arn}')['Tags']}}"
        ))
    };
    ensure(r#"team: "data", env: "prod""#)
        .plan()
        .succeeds()
        .stdout_contains("partition=aws-cn")
        .stdout_contains(&format!("arn={arn} changed=created"));
    ensure(r#"team: "data", env: "prod""#)
        .succeeds()
        .stdout_contains(&format!("arn={arn} changed=created"));
    assert_eq!(
        tags_on_moto(),
        serde_json::json!({"team": "data", "env": "prod"})
    );
    ensure(r#"team: "data""#)
        .succeeds()
        .stdout_contains("changed=unchanged");
    // Somebody else's tag stays; ours change or go.
    moto.python(&format!(
        "c('iam', region='{region}').tag_open_id_connect_provider(OpenIDConnectProviderArn='{arn}', Tags=[{{'Key': 'eksctl', 'Value': 'yes'}}])\nout = 1"
    ));
    let out = ensure(r#"team: "platform", env: ()"#)
        .plan()
        .json()
        .succeeds();
    let changes = out.changes();
    let mut paths: Vec<&str> = changes[0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(paths, vec!["tags.env", "tags.team"], "{out}");
    ensure(r#"team: "platform", env: ()"#)
        .succeeds()
        .stdout_contains("changed=updated");
    assert_eq!(
        tags_on_moto(),
        serde_json::json!({"team": "platform", "eksctl": "yes"})
    );
    ensure(r#"team: "platform", env: ()"#)
        .succeeds()
        .stdout_contains("changed=unchanged");
}

#[test]
fn trust_policy_compares_as_json_not_text() {
    needs!("moto");
    let moto = Moto::start();
    let issuer = moto.create_eks_cluster(CLUSTER);
    let hp = host_path(&issuer);
    // The same policy written another way: keys reordered, whitespace, a one-element Action list.
    moto.python(&format!(
        r#"
doc = '''{{ "Statement" : [ {{ "Condition": {{"StringEquals": {{"{hp}:aud": "sts.amazonaws.com", "{hp}:sub": "system:serviceaccount:collate:openmetadata"}}}},
  "Action": ["sts:AssumeRoleWithWebIdentity"], "Principal": {{"Federated": "arn:aws:iam::{ACCOUNT}:oidc-provider/{hp}"}}, "Effect": "Allow" }} ],
  "Version": "2012-10-17" }}'''
c('iam').create_role(RoleName='collate-server-role', AssumeRolePolicyDocument=doc, Tags=[{{'Key': 'managed-by', 'Value': 'collate-run'}}])
c('iam').attach_role_policy(RoleName='collate-server-role', PolicyArn='{S3_FULL}')
"#
    ));
    let out = run(&moto, &role_script(&issuer, "openmetadata", ""))
        .json()
        .succeeds();
    assert_eq!(actions(&out)[0].2, "unchanged", "{out}");
}

#[test]
fn bucket_plan_apply_unchanged_update_and_regions() {
    needs!("moto");
    let moto = Moto::start();
    let name = "collate-argo-artifacts-eu-west-1";
    let script = |tags: &str| {
        format!(
            r#"let b = aws::s3::ensure_bucket("{name}", #{{ encryption: "AES256", block_public: true, versioning: true, tags: #{{ {tags} }} }});
               print(`changed=${{b.changed}} arn=${{b.arn}} region=${{b.region}} enc=${{b.object.encryption.algorithm}}`);"#
        )
    };
    let out = run(&moto, &script("team: \"data\""))
        .plan()
        .json()
        .succeeds();
    assert_eq!(
        actions(&out),
        vec![("aws.s3.bucket".into(), name.into(), "create".into())]
    );
    out.stdout_contains(&format!(
        "changed=created arn=arn:aws:s3:::{name} region={REGION}"
    ));
    assert!(moto.bucket_names().is_empty(), "plan created a bucket");

    run(&moto, &script("team: \"data\""))
        .succeeds()
        .stdout_contains("changed=created");
    assert_eq!(moto.bucket_names(), vec![name.to_string()]);
    let state = moto.python(&format!(
        "s3 = c('s3')\n\
         out = {{'loc': s3.get_bucket_location(Bucket='{name}')['LocationConstraint'],\n\
                 'enc': s3.get_bucket_encryption(Bucket='{name}')['ServerSideEncryptionConfiguration']['Rules'][0]['ApplyServerSideEncryptionByDefault']['SSEAlgorithm'],\n\
                 'pab': s3.get_public_access_block(Bucket='{name}')['PublicAccessBlockConfiguration'],\n\
                 'ver': s3.get_bucket_versioning(Bucket='{name}').get('Status'),\n\
                 'tags': s3.get_bucket_tagging(Bucket='{name}')['TagSet']}}"
    ));
    assert_eq!(state["loc"], REGION);
    assert_eq!(state["enc"], "AES256");
    assert_eq!(state["pab"]["BlockPublicAcls"], true);
    assert_eq!(state["pab"]["RestrictPublicBuckets"], true);
    assert_eq!(state["ver"], "Enabled");
    assert_eq!(
        state["tags"],
        serde_json::json!([{"Key": "team", "Value": "data"}])
    );

    let out = run(&moto, &script("team: \"data\"")).json().succeeds();
    assert_eq!(actions(&out)[0].2, "unchanged");

    // A tag change updates only the tags, keeping tags set by others.
    moto.python(&format!(
        "c('s3').put_bucket_tagging(Bucket='{name}', Tagging={{'TagSet': [{{'Key': 'team', 'Value': 'data'}}, {{'Key': 'owner', 'Value': 'ops'}}]}})"
    ));
    let out = run(&moto, &script("team: \"platform\"")).json().succeeds();
    let change = &out.changes()[0];
    assert_eq!(change["action"], "update");
    assert_eq!(change["fields"][0]["path"], "tags.team");
    assert_eq!(change["fields"][0]["before"], "data");
    let tags = moto.python(&format!(
        "out = sorted([t['Key'] + '=' + t['Value'] for t in c('s3').get_bucket_tagging(Bucket='{name}')['TagSet']])"
    ));
    assert_eq!(tags, serde_json::json!(["owner=ops", "team=platform"]));

    // us-east-1 takes no LocationConstraint.
    run(
        &moto,
        r#"let b = aws::s3::ensure_bucket("collate-argo-artifacts-us-east-1", #{ region: "us-east-1" }); print(b.changed);"#,
    )
    .succeeds()
    .stdout_contains("created");
    let loc = moto.python(
        "out = c('s3', 'us-east-1').get_bucket_location(Bucket='collate-argo-artifacts-us-east-1')['LocationConstraint']",
    );
    assert!(loc.is_null() || loc == "us-east-1", "{loc}");
    run(
        &moto,
        r#"aws::s3::ensure_bucket("collate-argo-artifacts-us-east-1", #{ region: "us-east-1" }); print(aws::s3::bucket_exists("nope-bucket"));"#,
    )
    .succeeds()
    .stdout_contains("false");
    // A bucket in another region than the run's (eu-west-1) exists too.
    run(
        &moto,
        r#"print(`other-region=${aws::s3::bucket_exists("collate-argo-artifacts-us-east-1")}`);"#,
    )
    .succeeds()
    .stdout_contains("other-region=true");

    // Bad input.
    run(&moto, r#"aws::s3::ensure_bucket("Bad_Name");"#)
        .fails_with(1)
        .stderr_contains("not a valid S3 bucket name");
    run(
        &moto,
        &format!(r#"aws::s3::ensure_bucket("{name}", #{{ encryption: "rot13" }});"#),
    )
    .fails_with(1)
    .stderr_contains("`AES256`");
}

#[test]
fn a_bucket_of_another_account_is_a_clear_error_and_nothing_is_created() {
    needs!("moto");
    let moto = Moto::start();
    let name = "collate-argo-artifacts-taken";
    let script = format!(
        r#"aws::s3::ensure_bucket("{name}", #{{ encryption: "AES256", block_public: true }});"#
    );
    // S3 answers HeadBucket 403 for a bucket of another account (only S3 goes through the proxy).
    let proxy = FaultProxy::start(
        &moto.endpoint(),
        Faults::always(Fault::Status(403))
            .only(&format!("HEAD /{name}"))
            .body(""),
    );
    for plan in [true, false] {
        let mut r = run(&moto, &script).env("AWS_ENDPOINT_URL_S3", &proxy.url());
        if plan {
            r = r.plan();
        }
        r.fails_with(4)
            .stderr_contains(&format!(
                "S3 bucket `{name}` exists but is owned by another account, or these credentials may not read it (`s3:HeadBucket`: HTTP 403)"
            ))
            .stderr_contains("bucket names are global");
    }
    run(
        &moto,
        &format!(r#"try {{ aws::s3::bucket_exists("{name}"); }} catch (e) {{ print(`kind=${{e.kind}}`); }}"#),
    )
    .env("AWS_ENDPOINT_URL_S3", &proxy.url())
    .succeeds()
    .stdout_contains("kind=conflict");
    assert_eq!(proxy.stats().injected, 3);
    assert!(moto.bucket_names().is_empty());

    // The name is free to read but CreateBucket says another account took it first.
    proxy.set(
        Faults::always(Fault::Status(409))
            .only(&format!("PUT /{name}"))
            .body(&format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>BucketAlreadyExists</Code>\
                 <Message>The requested bucket name is not available.</Message><BucketName>{name}</BucketName></Error>"
            )),
    );
    run(&moto, &script)
        .env("AWS_ENDPOINT_URL_S3", &proxy.url())
        .fails_with(4)
        .stderr_contains(&format!(
            "S3 bucket name `{name}` is taken by another account (`s3:CreateBucket`: BucketAlreadyExists, HTTP 409)"
        ))
        .stderr_contains("choose another name");
    // One CreateBucket (`PUT /NAME/`) faulted, nothing after it.
    let stats = proxy.stats();
    assert_eq!(stats.injected, 4, "{stats:?}");
    assert!(
        stats.faulted[3].starts_with(&format!("PUT /{name}")),
        "{stats:?}"
    );
    assert!(moto.bucket_names().is_empty());
}

#[test]
fn ecr_docker_config_never_shows_the_password() {
    needs!("moto");
    let moto = Moto::start();
    let password = moto.ecr_password("118146679784");
    let auth = {
        // base64("AWS:" + password), as the document's `auth` holds it.
        let v = moto.python(&format!(
            "import base64\nout = base64.b64encode(b'AWS:{password}').decode()"
        ));
        v.as_str().unwrap().to_string()
    };
    let script = format!(
        r#"
        let s = aws::ecr::docker_config("{REGISTRY}");
        print(s);
        print(`interpolated ${{s}} type=${{type_of(s)}}`);
        log::info(`log ${{s}}`);
        let t = aws::ecr::docker_config("118146679784/eu-west-1");
        print(#{{ doc: t }});
        throw `failing with ${{s}}`;
        "#
    );
    for r in [
        run(&moto, &script),
        run(&moto, &script).json(),
        run(&moto, &script).plan(),
    ] {
        let out = r.fails_with(1);
        out.stdout_contains("type=Secret")
            .never_shows(&password)
            .never_shows(&auth);
        assert!(out.stdout.contains("***"), "{out}");
    }
    run(&moto, r#"aws::ecr::docker_config("docker.io");"#)
        .fails_with(1)
        .stderr_contains("is not an ECR registry");
}

/// The guide's AWS steps, in order, through aws-sdk-rust with an endpoint override: describe
/// the cluster, OIDC provider, artifact bucket, the four IRSA roles with their policies.
const GUIDE: &str = r#"
let account = aws::account_id();
let region = aws::region();
let issuer = aws::eks::oidc_issuer("collate-eks");
let provider = aws::iam::ensure_oidc_provider(issuer, #{ thumbprints: [] });
let bucket = aws::s3::ensure_bucket(`collate-argo-artifacts-${region}`, #{ block_public: true });
let roles = [
    ["collate-argo-controller-role", "argo-workflows", "argo-workflows-controller-sa", "arn:aws:iam::aws:policy/AmazonS3FullAccess"],
    ["collate-argo-server-role", "argo-workflows", "argo-workflows-server-sa", "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"],
    ["collate-server-role", "collate", "openmetadata", "arn:aws:iam::aws:policy/AmazonS3FullAccess"],
    ["collate-ingestion-role", "collate", "om-role", "arn:aws:iam::aws:policy/AmazonS3FullAccess"],
];
for r in roles {
    let role = aws::iam::ensure_role(r[0], #{
        trust: aws::iam::irsa_trust(issuer, r[1], r[2]),
        policies: [r[3]],
    });
    print(`${r[0]} ${role.changed} ${role.arn}`);
}
"#;

#[test]
fn guide_aws_steps_conform_on_moto() {
    needs!("moto");
    let moto = Moto::start();
    let issuer = moto.create_eks_cluster(CLUSTER);
    let hp = host_path(&issuer);

    let out = run(&moto, GUIDE).plan().json().succeeds();
    let kinds: Vec<(String, String)> = actions(&out).into_iter().map(|(k, _, a)| (k, a)).collect();
    assert_eq!(kinds.len(), 6, "{out}");
    assert!(kinds.iter().all(|(_, a)| a == "create"), "{kinds:?}");
    assert_eq!(out.summary()["type"], "summary");
    out.stdout_contains(&format!(
        "collate-server-role created arn:aws:iam::{ACCOUNT}:role/collate-server-role"
    ));
    assert!(
        moto.role_names().is_empty()
            && moto.bucket_names().is_empty()
            && moto.oidc_provider_arns().is_empty()
    );

    run(&moto, GUIDE)
        .succeeds()
        .stdout_contains("+ aws.iam.role collate-ingestion-role");
    let mut roles = moto.role_names();
    roles.sort();
    assert_eq!(
        roles,
        vec![
            "collate-argo-controller-role",
            "collate-argo-server-role",
            "collate-ingestion-role",
            "collate-server-role"
        ]
    );
    let check = moto.python(&format!(
        r#"
iam = c('iam')
out = {{}}
for r in ['collate-argo-controller-role', 'collate-argo-server-role', 'collate-server-role', 'collate-ingestion-role']:
    doc = iam.get_role(RoleName=r)['Role']['AssumeRolePolicyDocument']
    out[r] = [doc['Statement'][0]['Condition']['StringEquals']['{hp}:sub'],
              [p['PolicyArn'] for p in iam.list_attached_role_policies(RoleName=r)['AttachedPolicies']]]
"#
    ));
    assert_eq!(
        check["collate-argo-server-role"],
        serde_json::json!([
            "system:serviceaccount:argo-workflows:argo-workflows-server-sa",
            [S3_READ]
        ])
    );
    assert_eq!(
        check["collate-ingestion-role"],
        serde_json::json!(["system:serviceaccount:collate:om-role", [S3_FULL]])
    );
    assert_eq!(
        moto.bucket_names(),
        vec!["collate-argo-artifacts-eu-west-1"]
    );

    let out = run(&moto, GUIDE).json().succeeds();
    let all: Vec<String> = actions(&out).into_iter().map(|(_, _, a)| a).collect();
    assert_eq!(all, vec!["unchanged"; 6]);
    assert!(
        out.changes()
            .iter()
            .all(|c| c["fields"].is_null() || c["fields"] == Value::Array(vec![]))
    );
}

#[test]
fn doctor_irsa_finds_a_broken_trust() {
    needs!("moto");
    let moto = Moto::start();
    moto.create_eks_cluster(CLUSTER);
    run(&moto, GUIDE).succeeds();
    let doctor = || {
        Run::recipe("maintenance/doctor-irsa.rhai")
            .config(collate_run_tests::run::root().join("recipes/customer.example.yaml"))
            .set("cluster_name", CLUSTER)
            .envs(moto.env())
    };
    let out = doctor().succeeds();
    out.stdout_contains("IRSA chain is consistent")
        .stderr_contains("annotations not checked");
    // The header, the provider and 4 checks for each of the 4 roles; no problem rows.
    assert_eq!(out.stdout.matches("  ok  ").count(), 1 + 1 + 4 * 4, "{out}");
    assert!(!out.stdout.contains("  x  "), "{out}");

    // The server role trusts another ServiceAccount and lost its policy.
    moto.python(&format!(
        "c('iam').detach_role_policy(RoleName='collate-server-role', PolicyArn='{S3_FULL}')"
    ));
    run(
        &moto,
        &format!(
            r#"aws::iam::ensure_role("collate-server-role", #{{ trust: aws::iam::irsa_trust(aws::eks::oidc_issuer("{CLUSTER}"), "collate", "someone-else") }});"#
        ),
    )
    .succeeds();
    let out = doctor().fails_with(5);
    out.stdout_contains("trust sub")
        .stdout_contains("system:serviceaccount:collate:someone-else; fix: expected system:serviceaccount:collate:openmetadata")
        .stdout_contains("AmazonS3FullAccess not attached")
        .stderr_contains("2 IRSA problem(s) found");
}

/// Two runs at once: somebody else creates the OIDC provider, the role and the bucket between
/// our read and our create (the proxy sends each create twice; our create is the second, so IAM
/// answers `EntityAlreadyExists` and S3 `BucketAlreadyOwnedByYou`). Each call converges the object
/// it lost to, with no error, and the next run changes nothing.
#[test]
fn ensure_calls_converge_when_they_lose_a_create_race() {
    needs!("moto");
    let moto = Moto::start();
    let issuer = moto.create_eks_cluster(CLUSTER);
    let bucket = "collate-argo-artifacts-race";
    let script = format!(
        r#"
        let p = aws::iam::ensure_oidc_provider("{issuer}", #{{ thumbprints: [] }});
        print(`provider=${{p.changed}}`);
        {role}
        let b = aws::s3::ensure_bucket("{bucket}", #{{ encryption: "AES256", block_public: true }});
        print(`bucket=${{b.changed}}`);
        "#,
        role = role_script(&issuer, "om-role", "")
    );
    let iam = FaultProxy::start(
        &moto.endpoint(),
        Faults::share(1.0, &[Fault::Duplicate]).only("Action=Create"),
    );
    let s3 = FaultProxy::start(
        &moto.endpoint(),
        Faults::share(1.0, &[Fault::Duplicate]).only("CreateBucketConfiguration"),
    );
    let out = run(&moto, &script)
        .env("AWS_ENDPOINT_URL_IAM", &iam.url())
        .env("AWS_ENDPOINT_URL_S3", &s3.url())
        .json()
        .succeeds();
    let raced = |p: &FaultProxy| p.stats().by_fault.get("duplicate").copied();
    assert_eq!(raced(&iam), Some(2), "{:?}", iam.stats());
    assert_eq!(raced(&s3), Some(1), "{:?}", s3.stats());
    out.stdout_contains("provider=unchanged")
        .stdout_contains("changed=updated policies=1");
    assert_eq!(moto.role_names(), vec!["collate-server-role".to_string()]);
    assert_eq!(moto.bucket_names(), vec![bucket.to_string()]);
    assert_eq!(moto.oidc_provider_arns().len(), 1);
    // The role the other run created had no policy yet: this run attached it (an update).
    let role = actions(&out)
        .into_iter()
        .find(|a| a.0 == "aws.iam.role")
        .expect("a role entry");
    assert_eq!(role.2, "update", "{out}");

    let again = run(&moto, &script).json().succeeds();
    assert_eq!(again.summary()["create"], 0, "{again}");
    assert_eq!(again.summary()["update"], 0, "{again}");
}

/// The deletes teardown uses: a role with managed and inline policies (planned with what goes,
/// then deleted; again: unchanged), a bucket with an object (refused without `empty`, deleted
/// with it), the OIDC provider.
#[test]
fn deletes_plan_delete_and_are_idempotent() {
    needs!("moto");
    let moto = Moto::start();
    let issuer = moto.create_eks_cluster(CLUSTER);
    run(
        &moto,
        &format!(
            r#"
            aws::iam::ensure_oidc_provider("{issuer}");
            aws::iam::ensure_role("gone-role", #{{
                trust: aws::iam::irsa_trust("{issuer}", "ns", "sa"),
                policies: ["{S3_READ}"],
                inline: #{{ extra: #{{ Version: "2012-10-17", Statement: [#{{ Effect: "Allow", Action: "s3:GetObject", Resource: "*" }}] }} }},
            }});
            aws::s3::ensure_bucket("gone-bucket");
            "#
        ),
    )
    .succeeds();
    moto.python("c('s3').put_object(Bucket='gone-bucket', Key='a/b', Body=b'x')\nout = 1");
    let delete = format!(
        r#"
        aws::iam::delete_role("gone-role");
        aws::s3::delete_bucket("gone-bucket", #{{ empty: true }});
        aws::iam::delete_oidc_provider("{issuer}");
        "#
    );
    let plan = run(&moto, &delete).plan().json().succeeds();
    let diff = plan.changes();
    let role = diff.iter().find(|c| c["kind"] == "aws.iam.role").unwrap();
    let paths: Vec<&str> = role["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"inline.extra"), "{paths:?}");
    assert!(
        paths.iter().any(|p| p.contains("AmazonS3ReadOnlyAccess")),
        "{paths:?}"
    );
    assert!(
        plan.stdout.contains("1 object versions and delete markers"),
        "{plan}"
    );
    assert_eq!(moto.role_names(), vec!["gone-role".to_string()]);

    // A bucket with data is refused without `empty`.
    run(&moto, r#"aws::s3::delete_bucket("gone-bucket", #{});"#)
        .fails_with(4)
        .stderr_contains("S3 bucket `gone-bucket` is not empty")
        .stderr_contains("empty: true");
    assert_eq!(moto.bucket_names(), vec!["gone-bucket".to_string()]);

    let out = run(&moto, &delete).json().succeeds();
    assert!(
        actions(&out).iter().all(|(_, _, a)| a == "delete"),
        "{:?}",
        actions(&out)
    );
    assert!(moto.role_names().is_empty() && moto.bucket_names().is_empty());
    assert!(moto.oidc_provider_arns().is_empty());
    let again = run(&moto, &delete).json().succeeds();
    assert!(
        actions(&again).iter().all(|(_, _, a)| a == "unchanged"),
        "{:?}",
        actions(&again)
    );
}

/// Secrets where customers keep them: Secrets Manager (whole, or a key of its JSON) and SSM
/// (SecureString, decrypted), in scripts and as config references; values stay Secrets (masked
/// in output); a missing secret, key or parameter is an error naming the reference (and the
/// config key) before anything changes; `check` lists them as needed at run time.
#[test]
fn secrets_from_secrets_manager_and_ssm() {
    needs!("moto");
    let moto = Moto::start();
    moto.python(
        "c('secretsmanager').create_secret(Name='collate/db', SecretString=json.dumps({'password': 'sm-canary-71kq', 'user': 'om'}))\n\
         c('secretsmanager').create_secret(Name='collate/token', SecretString='tok-canary-5pzw')\n\
         c('ssm').put_parameter(Name='/collate/es', Value='ssm-canary-8vbn', Type='SecureString')\n\
         out = 1",
    );
    let out = run(
        &moto,
        r#"
        let pw = secret::aws_secret("collate/db", "password");
        let tok = secret::aws_secret("collate/token");
        let es = secret::ssm("/collate/es");
        print(`${pw} ${pw.len} ${tok.len} ${es.len} ${secret::is_secret(es)}`);
        print(pw.source);
        log::info(`leak? ${pw}`);
        "#,
    )
    .succeeds();
    out.stdout_contains("*** 14 15 15 true")
        .stdout_contains("aws secret collate/db key password")
        .never_shows("sm-canary-71kq")
        .never_shows("tok-canary-5pzw")
        .never_shows("ssm-canary-8vbn");

    // As config references, resolved by validate_config.
    let schema = r#"
        let cfg = validate_config(config, #{ "db.password": "secret", "es.password": "secret" });
        print(`db=${cfg.db.password.len} es=${cfg.es.password.len}`);
    "#;
    let config =
        |db: &str| format!("db: {{password: {db}}}\nes: {{password: {{ssm: /collate/es}}}}\n");
    run(&moto, schema)
        .config_yaml(&config("{aws_secret: collate/db, key: password}"))
        .succeeds()
        .stdout_contains("db=14 es=15");
    run(&moto, schema)
        .config_yaml(&config("{aws_secret: collate/db, key: passwd}"))
        .fails_with(3)
        .stderr_contains(
            "config key `db.password`: AWS Secrets Manager secret `collate/db` has no key `passwd`",
        )
        .stderr_contains("its keys: password, user")
        .never_shows("sm-canary-71kq");
    run(&moto, schema)
        .config_yaml(&config("{aws_secret: collate/nope}"))
        .fails_with(3)
        .stderr_contains("AWS Secrets Manager secret `collate/nope` does not exist");
    run(&moto, r#"secret::ssm("/collate/nope");"#)
        .fails_with(4)
        .stderr_contains("SSM parameter `/collate/nope` does not exist");
}
