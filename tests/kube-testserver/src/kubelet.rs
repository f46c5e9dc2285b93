//! A minimal, honest "kubelet" and Job controller: a Job gets Pods (owner reference, the
//! `controller-uid`/`job-name` labels), and a Pod of a Job whose container image is registered
//! ([`Image`]) runs as a local process with the pod's environment, volumes, service-account files
//! and user, in a private mount namespace. Its exit code becomes the pod's phase and the Job's
//! counters and conditions; its stdout and stderr become `pods/NAME/log`. See the README's
//! "Kubelet and Job controller" for every emulated behaviour and its upstream source, and for
//! what is not emulated.

use crate::api::Shared;
use crate::controllers::i64_at;
use crate::state::State;
use crate::util::{now_rfc3339, random_suffix};
use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

/// Where the kubelet mounts the service account (kubernetes `pkg/serviceaccount`,
/// `DefaultAPITokenMountPath`); kube-rs and client-go read these fixed paths.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Where EKS's pod identity webhook mounts the projected IRSA token.
pub const IRSA_TOKEN_DIR: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
/// The PATH a container gets when its image sets none (the Docker/OCI default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A container image the kubelet can run: one local binary (the image's entrypoint), and
/// environment the test world adds to every container of that image (e.g. `AWS_ENDPOINT_URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub binary: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Image {
    /// Image `name` (as written in `containers[].image`) runs `binary`.
    pub fn new(name: &str, binary: impl AsRef<Path>) -> Image {
        Image {
            name: name.to_string(),
            binary: binary.as_ref().to_path_buf(),
            env: Vec::new(),
        }
    }

    /// Adds `key=value` to the environment of every container of this image (after the pod's own).
    pub fn env(mut self, key: &str, value: &str) -> Image {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// `NAME=BINARY`, as given to `--image`.
    pub fn parse(spec: &str) -> Result<Image, String> {
        match spec.split_once('=') {
            Some((name, binary)) if !name.is_empty() && !binary.is_empty() => {
                Ok(Image::new(name, binary))
            }
            _ => Err(format!("`--image {spec}`: expected NAME=BINARY")),
        }
    }
}

/// The kubelet's state (held in [`State`]).
#[derive(Default)]
pub struct Kubelet {
    pub images: Vec<Image>,
    /// The CA (PEM) clients of the API server trust; `None` when it serves plain HTTP.
    pub ca: Option<String>,
    /// Mutate pods of service accounts annotated `eks.amazonaws.com/role-arn` as EKS's pod
    /// identity webhook does.
    pub eks_pod_identity_webhook: bool,
    /// The AWS region that webhook injects (`AWS_REGION`, `AWS_DEFAULT_REGION`), if any.
    pub eks_region: Option<String>,
    /// The API server's port (`KUBERNETES_SERVICE_PORT`).
    pub port: u16,
    /// Names only the cluster's DNS resolves (a private zone of the customer's VPC, a
    /// Service's name), as (name, IP): written into every pod's `/etc/hosts`.
    pub cluster_dns: Vec<(String, String)>,
    /// Pods (by uid) the kubelet has taken: started, or refused with a reason.
    pub(crate) handled: HashSet<String>,
    /// When the Job controller first synced each Job (by uid), for `activeDeadlineSeconds`.
    pub(crate) job_started: HashMap<String, std::time::Instant>,
    /// The processes of running pods, by pod uid (killed when the server stops).
    pub(crate) running: HashMap<String, u32>,
    /// The server is stopping: a process that starts now is killed at once.
    pub(crate) stopping: bool,
    /// `pods/log` text by (namespace, pod, container).
    pub(crate) logs: HashMap<(String, String, String), String>,
}

/// Whether pods can run here: root, `unshare -m` with tmpfs, bind and overlay mounts. Tested
/// once per process.
pub fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg("d=$(mktemp -d) && mkdir $d/u $d/w && mount -t tmpfs tmpfs /run && mount -t overlay overlay -o lowerdir=/etc,upperdir=$d/u,workdir=$d/w /etc")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

/// The Job that controls `pod`, if any: (name, uid).
fn owner_job(pod: &Value) -> Option<(String, String)> {
    pod.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|o| o["kind"] == "Job" && o["controller"] == true)
        .map(|o| (s(o, "/name").to_string(), s(o, "/uid").to_string()))
}

// ---------------------------------------------------------------------------------------------
// The Job controller (kubernetes `pkg/controller/job/job_controller.go`, `syncJob`).

/// A condition of type `ty` is True on `job`.
fn has_condition(job: &Value, ty: &str) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| c["type"] == ty && c["status"] == "True"))
}

/// Reconciles a Job: counts its pods, creates the next one, writes status and conditions.
pub fn job(shared: &Arc<Shared>, state: &mut State, job: &Value) {
    if has_condition(job, "Complete")
        || has_condition(job, "Failed")
        || job.pointer("/spec/suspend") == Some(&json!(true))
    {
        return;
    }
    let Some(pod_type) = state.find_type("", "pods") else {
        return;
    };
    let ns = s(job, "/metadata/namespace").to_string();
    let uid = s(job, "/metadata/uid").to_string();
    let pods: Vec<Value> = state
        .list(&pod_type, Some(&ns))
        .into_iter()
        .filter(|p| owner_job(p).is_some_and(|(_, u)| u == uid))
        .cloned()
        .collect();
    let phase = |p: &Value| s(p, "/status/phase").to_string();
    let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
    let mut failed = pods.iter().filter(|p| phase(p) == "Failed").count() as i64;
    let mut active = pods.len() as i64 - succeeded - failed;
    let ready = pods
        .iter()
        .filter(|p| {
            p.pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
        .count() as i64;
    let completions = i64_at(job, "/spec/completions", 1);
    let parallelism = i64_at(job, "/spec/parallelism", 1);
    let backoff_limit = i64_at(job, "/spec/backoffLimit", 6);
    let now = now_rfc3339();
    let mut status = job.get("status").cloned().unwrap_or(json!({}));
    if !status.is_object() {
        status = json!({});
    }
    if status.get("startTime").is_none_or(Value::is_null) {
        status["startTime"] = json!(now);
    }
    let mut conditions: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let condition = |ty: &str, reason: &str, message: &str| json!({"type": ty, "status": "True", "lastProbeTime": now, "lastTransitionTime": now, "reason": reason, "message": message});
    // `activeDeadlineSeconds`, timed from the controller's first sync of the Job.
    let first_sync = !state.kubelet.job_started.contains_key(&uid);
    let started = *state
        .kubelet
        .job_started
        .entry(uid.clone())
        .or_insert_with(std::time::Instant::now);
    let deadline = job
        .pointer("/spec/activeDeadlineSeconds")
        .and_then(Value::as_u64)
        .map(std::time::Duration::from_secs);
    let past_deadline = deadline.is_some_and(|d| started.elapsed() >= d);
    // Failures first, then success (`syncJob`: the finished condition).
    let failure = if failed > backoff_limit {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ))
    } else if past_deadline {
        Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ))
    } else {
        None
    };
    if let Some((reason, message)) = failure {
        // The interim `FailureTarget`, then `Failed`; no completionTime. Active pods are
        // deleted and, the Job being finished, counted as failed.
        for p in pods
            .iter()
            .filter(|p| !matches!(phase(p).as_str(), "Succeeded" | "Failed"))
        {
            let mut gone = p.clone();
            gone["metadata"]["deletionTimestamp"] = json!(now);
            state.commit(&pod_type, gone, "DELETED");
            failed += 1;
        }
        active = 0;
        conditions.push(condition("FailureTarget", reason, message));
        conditions.push(condition("Failed", reason, message));
    } else if succeeded >= completions {
        // `SuccessCriteriaMet` first, then `Complete` (trackJobStatusAndRemoveFinalizers).
        let (reason, message) = (
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        );
        conditions.push(condition("SuccessCriteriaMet", reason, message));
        conditions.push(condition("Complete", reason, message));
        status["completionTime"] = json!(now);
        cron_job_saw_success(state, job, &now);
    } else {
        let want = parallelism.min(completions - succeeded) - active;
        for _ in 0..want.max(0) {
            create_pod(state, job);
            active += 1;
        }
        if let Some(d) = deadline.filter(|_| first_sync) {
            // Sync again when the deadline passes (`queue.AddAfter`).
            let followup = crate::state::Followup {
                group: "batch".into(),
                plural: "jobs".into(),
                namespace: ns.clone(),
                name: s(job, "/metadata/name").to_string(),
            };
            let shared = Arc::clone(shared);
            let wait = d.saturating_sub(started.elapsed());
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                shared.lock().followups.push(followup);
                crate::controllers::spawn_followups(&shared);
            });
        }
    }
    status["conditions"] = json!(conditions);
    if conditions.is_empty() {
        status.as_object_mut().map(|m| m.remove("conditions"));
    }
    status["active"] = json!(active);
    status["succeeded"] = json!(succeeded);
    status["failed"] = json!(failed);
    status["ready"] = json!(ready);
    status["terminating"] = json!(0);
    status["uncountedTerminatedPods"] = json!({});
    crate::controllers::set_status(state, "batch", "jobs", job, status);
}

/// A Job a CronJob controls succeeded: the CronJob's `status.lastSuccessfulTime` becomes its
/// completion time when later (kubernetes `pkg/controller/cronjob/cronjob_controllerv2.go`,
/// `syncCronJob`: "a job does not have to be in active list, as long as it has completed
/// successfully"). The schedule itself never fires here.
fn cron_job_saw_success(state: &mut State, job: &Value, completion: &str) {
    let Some(owner) = job
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|o| {
            o.iter()
                .find(|o| o["kind"] == "CronJob" && o["controller"] == true)
        })
    else {
        return;
    };
    let Some(cron_type) = state.find_type("batch", "cronjobs") else {
        return;
    };
    let Some(cron) = state
        .get(&cron_type, s(job, "/metadata/namespace"), s(owner, "/name"))
        .filter(|c| c["metadata"]["uid"] == owner["uid"])
        .cloned()
    else {
        return;
    };
    // RFC 3339 UTC timestamps of one format order as strings.
    if cron
        .pointer("/status/lastSuccessfulTime")
        .and_then(Value::as_str)
        .is_some_and(|last| last >= completion)
    {
        return;
    }
    crate::controllers::set_status(
        state,
        "batch",
        "cronjobs",
        &cron,
        json!({"lastSuccessfulTime": completion}),
    );
}

/// The labels the API server puts on a Job's pod template and selector at creation
/// (kubernetes `pkg/registry/batch/job/strategy.go`, `generateSelector`).
pub fn job_labels(name: &Value, uid: &Value) -> Value {
    json!({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name, "controller-uid": uid, "job-name": name})
}

/// The Job's next pod (`<job>-<5 random>`, as the controller's `generateName`), Pending.
fn create_pod(state: &mut State, job: &Value) {
    let Some(pod_type) = state.find_type("", "pods") else {
        return;
    };
    let name = &job["metadata"]["name"];
    let uid = &job["metadata"]["uid"];
    let template = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut labels = template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    if let (Some(l), Some(extra)) = (labels.as_object_mut(), job_labels(name, uid).as_object()) {
        l.extend(extra.clone());
    }
    let mut metadata = json!({
        "name": format!("{}-{}", name.as_str().unwrap_or_default(), random_suffix(5)),
        "namespace": job["metadata"]["namespace"],
        "uid": crate::util::new_uid(),
        "creationTimestamp": now_rfc3339(),
        "labels": labels,
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
    });
    if let Some(a) = template.pointer("/metadata/annotations") {
        metadata["annotations"] = a.clone();
    }
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    });
    pod["spec"]["nodeName"] = json!(crate::controllers::node_name(state));
    admit_pod(state, &mut pod);
    state.commit(&pod_type, pod, "ADDED");
}

/// Mutating admission of a new pod: EKS's pod identity webhook, when enabled
/// (aws/amazon-eks-pod-identity-webhook `pkg/handler/handler.go`): for a service account
/// annotated `eks.amazonaws.com/role-arn`, every container gets `AWS_ROLE_ARN`,
/// `AWS_WEB_IDENTITY_TOKEN_FILE` (and the region when configured), a read-only mount of the
/// `aws-iam-token` volume at [`IRSA_TOKEN_DIR`], and the pod that projected token volume
/// (audience `sts.amazonaws.com`, 86400 s).
pub fn admit_pod(state: &State, pod: &mut Value) {
    if !state.kubelet.eks_pod_identity_webhook {
        return;
    }
    let ns = s(pod, "/metadata/namespace").to_string();
    let sa_name = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let Some(sa_type) = state.find_type("", "serviceaccounts") else {
        return;
    };
    let Some(role) = state.get(&sa_type, &ns, &sa_name).and_then(|sa| {
        sa.pointer("/metadata/annotations/eks.amazonaws.com~1role-arn")
            .and_then(Value::as_str)
            .map(str::to_string)
    }) else {
        return;
    };
    let mut env = vec![
        json!({"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"}),
        json!({"name": "AWS_ROLE_ARN", "value": role}),
        json!({"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": format!("{IRSA_TOKEN_DIR}/token")}),
    ];
    if let Some(region) = &state.kubelet.eks_region {
        env.push(json!({"name": "AWS_DEFAULT_REGION", "value": region}));
        env.push(json!({"name": "AWS_REGION", "value": region}));
    }
    // The volume already there: nothing to do; a container that sets the variables or mounts
    // the volume itself is left alone (`updatePodSpec`, `addEnvToContainer`).
    if pod["spec"]["volumes"]
        .as_array()
        .is_some_and(|v| v.iter().any(|v| v["name"] == "aws-iam-token"))
    {
        return;
    }
    for list in ["initContainers", "containers"] {
        for c in pod["spec"][list].as_array_mut().into_iter().flatten() {
            let sets = c["env"].as_array().is_some_and(|e| {
                e.iter().any(|e| {
                    e["name"] == "AWS_ROLE_ARN" || e["name"] == "AWS_WEB_IDENTITY_TOKEN_FILE"
                })
            });
            let mounts = c["volumeMounts"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["name"] == "aws-iam-token"));
            if sets || mounts {
                continue;
            }
            let names: Vec<Value> = c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["name"].clone())
                .collect();
            if !c["env"].is_array() {
                c["env"] = json!([]);
            }
            let env_list = c["env"].as_array_mut().expect("array");
            env_list.extend(env.iter().filter(|e| !names.contains(&e["name"])).cloned());
            if !c["volumeMounts"].is_array() {
                c["volumeMounts"] = json!([]);
            }
            c["volumeMounts"].as_array_mut().expect("array").push(
                json!({"name": "aws-iam-token", "mountPath": IRSA_TOKEN_DIR, "readOnly": true}),
            );
        }
    }
    if !pod["spec"]["volumes"].is_array() {
        pod["spec"]["volumes"] = json!([]);
    }
    pod["spec"]["volumes"].as_array_mut().expect("array").push(json!({"name": "aws-iam-token", "projected": {"sources": [{"serviceAccountToken": {"audience": "sts.amazonaws.com", "expirationSeconds": 86400, "path": "token"}}]}}));
}

// ---------------------------------------------------------------------------------------------
// The kubelet.

/// Handles a pod of a Job: starts it when its image is registered, or says in its status why
/// it stays Pending; then reconciles the Job. Returns false for pods no Job controls (the
/// simulated controllers mark those Running, as before).
pub fn pod(shared: &Arc<Shared>, state: &mut State, pod: &Value) -> bool {
    let Some((job_name, _)) = owner_job(pod) else {
        return false;
    };
    let uid = s(pod, "/metadata/uid").to_string();
    let phase = s(pod, "/status/phase");
    if !matches!(phase, "Succeeded" | "Failed") && state.kubelet.handled.insert(uid) {
        match prepare(state, pod) {
            Ok(run) => {
                set_container_state(state, pod, "Running", run.started_state());
                let shared = Arc::clone(shared);
                tokio::spawn(async move {
                    let for_run = Arc::clone(&shared);
                    let _ = tokio::task::spawn_blocking(move || execute(&for_run, run)).await;
                    crate::controllers::spawn_followups(&shared);
                });
            }
            Err((reason, message)) => set_container_state(
                state,
                pod,
                "Pending",
                json!({"waiting": {"reason": reason, "message": message}}),
            ),
        }
    }
    if let Some(job_type) = state.find_type("batch", "jobs")
        && let Some(j) = state
            .get(&job_type, s(pod, "/metadata/namespace"), &job_name)
            .cloned()
    {
        job(shared, state, &j);
    }
    true
}

/// Writes the pod's phase, conditions and its one container's `state`.
fn set_container_state(state: &mut State, pod: &Value, phase: &str, container_state: Value) {
    let Some(pod_type) = state.find_type("", "pods") else {
        return;
    };
    let Some(current) = state
        .get(
            &pod_type,
            s(pod, "/metadata/namespace"),
            s(pod, "/metadata/name"),
        )
        .cloned()
    else {
        return;
    };
    let now = now_rfc3339();
    let running = phase == "Running";
    let done = matches!(phase, "Succeeded" | "Failed");
    let (ready, reason) = match phase {
        "Running" => ("True", None),
        "Pending" => ("False", Some("ContainersNotReady")),
        _ => ("False", Some("PodCompleted")),
    };
    let cond = |ty: &str, status: &str, reason: Option<&str>| {
        let mut c =
            json!({"type": ty, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
        if let Some(r) = reason {
            c["reason"] = json!(r);
        }
        c
    };
    let containers: Vec<Value> = current["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": running, "started": running, "restartCount": 0, "state": container_state})
        })
        .collect();
    let mut status = current.get("status").cloned().unwrap_or(json!({}));
    status["phase"] = json!(phase);
    status["hostIP"] = json!("10.0.0.1");
    status["hostIPs"] = json!([{"ip": "10.0.0.1"}]);
    if running || done {
        status["podIP"] = json!("10.244.0.20");
        status["podIPs"] = json!([{"ip": "10.244.0.20"}]);
    }
    if status.get("startTime").is_none() {
        status["startTime"] = json!(now);
    }
    status["conditions"] = json!([
        cond("PodReadyToStartContainers", "True", None),
        cond(
            "Initialized",
            "True",
            if done { Some("PodCompleted") } else { None }
        ),
        cond("Ready", ready, reason),
        cond("ContainersReady", ready, reason),
        cond("PodScheduled", "True", None),
    ]);
    status["containerStatuses"] = json!(containers);
    status["qosClass"] = json!("BestEffort");
    let mut new = current;
    new["status"] = status;
    state.commit(&pod_type, new, "MODIFIED");
}

/// Everything a pod run needs, resolved from the store while it is locked.
struct Run {
    namespace: String,
    pod: String,
    uid: String,
    container: String,
    binary: PathBuf,
    /// `command[1..]` then `args` (or just `args`), `$(VAR)` expanded.
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// (mount path, files relative to it, read-only); an empty list is an empty directory.
    mounts: Vec<(String, Files, bool)>,
    user: Option<(i64, i64)>,
    working_dir: String,
    /// The pod's `/etc/hosts`: this machine's, then the cluster's names and `hostAliases`.
    hosts: String,
    started_at: String,
}

impl Run {
    fn started_state(&self) -> Value {
        json!({"running": {"startedAt": self.started_at}})
    }
}

type Refusal = (&'static str, String);
/// A volume's files: path relative to the mount, content.
type Files = Vec<(String, Vec<u8>)>;

/// Resolves the pod's one container: image, environment, volumes, user. A refusal is the
/// container's `waiting` reason and message.
fn prepare(state: &mut State, pod: &Value) -> Result<Run, Refusal> {
    let containers = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let [container] = containers.as_slice() else {
        return Err((
            "CreateContainerConfigError",
            "kube-testserver's kubelet runs pods of exactly one container".into(),
        ));
    };
    let image_name = s(container, "/image");
    let Some(image) = state
        .kubelet
        .images
        .iter()
        .find(|i| i.name == image_name)
        .cloned()
    else {
        return Err((
            "ImagePullBackOff",
            format!(
                "image \"{image_name}\" is not registered with kube-testserver (--image {image_name}=BINARY)"
            ),
        ));
    };
    let Some(ca) = state.kubelet.ca.clone() else {
        return Err((
            "CreateContainerConfigError",
            "kube-testserver serves plain HTTP: in-cluster clients reach KUBERNETES_SERVICE_HOST over HTTPS, so the kubelet runs pods only on a server started with TLS".into(),
        ));
    };
    if !supported() {
        return Err((
            "RunContainerError",
            "kube-testserver's kubelet needs root and `unshare -m` (tmpfs, bind and overlay mounts) to run a pod".into(),
        ));
    }
    let ns = s(pod, "/metadata/namespace").to_string();
    let pod_name = s(pod, "/metadata/name").to_string();
    let sa = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();

    // Environment (kubernetes `pkg/kubelet/kubelet_pods.go`, `makeEnvironmentVariables`): the
    // service variables, then `envFrom` in order, then `env` (each may refer to earlier ones).
    let port = state.kubelet.port;
    let mut env: Vec<(String, String)> = vec![
        ("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()),
        ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
        ("KUBERNETES_PORT".into(), format!("tcp://127.0.0.1:{port}")),
    ];
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(n, _)| *n != k);
        env.push((k, v));
    };
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = s(from, "/prefix");
        let (kind, r) = if from.get("secretRef").is_some() {
            ("Secret", &from["secretRef"])
        } else {
            ("ConfigMap", &from["configMapRef"])
        };
        let optional = r["optional"] == true;
        match source_data(state, kind, &ns, s(r, "/name")) {
            Some(data) => {
                for (k, v) in data {
                    let name = format!("{prefix}{k}");
                    if valid_env_name(&name) {
                        set(&mut env, name, String::from_utf8_lossy(&v).into_owned());
                    }
                }
            }
            None if optional => {}
            None => {
                return Err((
                    "CreateContainerConfigError",
                    format!("{} \"{}\" not found", kind.to_lowercase(), s(r, "/name")),
                ));
            }
        }
    }
    for e in container["env"].as_array().into_iter().flatten() {
        let name = s(e, "/name").to_string();
        let value = if let Some(from) = e.get("valueFrom") {
            let keyed = [("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")]
                .into_iter()
                .find(|(_, f)| from.get(*f).is_some());
            if let Some((kind, field)) = keyed {
                let r = &from[field];
                let (obj, key) = (s(r, "/name"), s(r, "/key"));
                let optional = r["optional"] == true;
                let data = source_data(state, kind, &ns, obj);
                match data.as_ref().and_then(|d| d.get(key)) {
                    Some(v) => String::from_utf8_lossy(v).into_owned(),
                    None if optional => continue,
                    None if data.is_none() => {
                        return Err((
                            "CreateContainerConfigError",
                            format!("{} \"{obj}\" not found", kind.to_lowercase()),
                        ));
                    }
                    None => {
                        return Err((
                            "CreateContainerConfigError",
                            format!("couldn't find key {key} in {kind} {ns}/{obj}"),
                        ));
                    }
                }
            } else if let Some(path) = from.pointer("/fieldRef/fieldPath").and_then(Value::as_str) {
                field_ref(pod, path).ok_or_else(|| {
                    (
                        "CreateContainerConfigError",
                        format!("unsupported fieldPath: {path}"),
                    )
                })?
            } else {
                return Err((
                    "CreateContainerConfigError",
                    format!(
                        "env {name}: only secretKeyRef, configMapKeyRef and fieldRef are emulated"
                    ),
                ));
            }
        } else {
            expand(s(e, "/value"), &env)
        };
        set(&mut env, name, value);
    }
    set(&mut env, "HOSTNAME".into(), pod_name.clone());
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    for (k, v) in &image.env {
        set(&mut env, k.clone(), v.clone());
    }

    // Volumes.
    let volumes = pod["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut mounts = Vec::new();
    let automount = pod.pointer("/spec/automountServiceAccountToken") != Some(&json!(false));
    if automount {
        let token = state.issue_token(&ns, &sa);
        mounts.push((
            SERVICE_ACCOUNT_DIR.to_string(),
            vec![
                ("token".to_string(), token.into_bytes()),
                ("ca.crt".to_string(), ca.clone().into_bytes()),
                ("namespace".to_string(), ns.clone().into_bytes()),
            ],
            true,
        ));
    }
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = s(m, "/name");
        let mount_path = s(m, "/mountPath").to_string();
        let creating = |message: String| ("ContainerCreating", message);
        if m.get("subPath").is_some() {
            return Err(creating(format!(
                "volume \"{name}\": subPath is not emulated"
            )));
        }
        let Some(volume) = volumes.iter().find(|v| v["name"] == name) else {
            return Err(creating(format!("volume \"{name}\" is not defined")));
        };
        let files = volume_files(state, &ns, &sa, volume).map_err(|e| {
            creating(format!(
                "MountVolume.SetUp failed for volume \"{name}\" : {e}"
            ))
        })?;
        mounts.push((mount_path, files, m["readOnly"] == true));
    }

    // The user (container securityContext over the pod's; the image's user is root).
    let ctx = |field: &str| {
        container
            .pointer(&format!("/securityContext/{field}"))
            .or_else(|| pod.pointer(&format!("/spec/securityContext/{field}")))
            .cloned()
    };
    let uid = ctx("runAsUser").and_then(|v| v.as_i64());
    if ctx("runAsNonRoot") == Some(json!(true)) && uid.unwrap_or(0) == 0 {
        return Err((
            "CreateContainerConfigError",
            "container has runAsNonRoot and image will run as root".into(),
        ));
    }
    let user = uid.map(|u| (u, ctx("runAsGroup").and_then(|v| v.as_i64()).unwrap_or(0)));

    let command: Vec<String> = strings(&container["command"]);
    let mut args: Vec<String> = command.iter().skip(1).cloned().collect();
    args.extend(strings(&container["args"]));
    let args = args.iter().map(|a| expand(a, &env)).collect();
    Ok(Run {
        namespace: ns,
        pod: pod_name,
        uid: s(pod, "/metadata/uid").to_string(),
        container: s(container, "/name").to_string(),
        binary: image.binary,
        args,
        env,
        mounts,
        user,
        working_dir: container["workingDir"].as_str().unwrap_or("/").to_string(),
        hosts: hosts_file(&state.kubelet.cluster_dns, pod),
        started_at: now_rfc3339(),
    })
}

/// The `/etc/hosts` the kubelet gives a pod (`pkg/kubelet/kubelet_pods.go`,
/// `managedHostsFileContent`: the defaults, then "# Entries added by HostAliases."): here this
/// machine's own file, then the names the cluster's DNS resolves (`cluster_dns`), then the pod's
/// `spec.hostAliases`.
fn hosts_file(cluster_dns: &[(String, String)], pod: &Value) -> String {
    let mut out = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if !cluster_dns.is_empty() {
        out += "# Names the cluster's DNS resolves (kube-testserver --cluster-dns).\n";
        for (name, ip) in cluster_dns {
            out += &format!("{ip}\t{name}\n");
        }
    }
    let aliases = pod["spec"]["hostAliases"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !aliases.is_empty() {
        out += "\n# Entries added by HostAliases.\n";
        for a in aliases {
            let names: Vec<String> = strings(&a["hostnames"]);
            out += &format!(
                "{}\t{}\n",
                a["ip"].as_str().unwrap_or_default(),
                names.join("\t")
            );
        }
    }
    out
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// A C identifier-like name (`validation.IsEnvVarName`: `[-._a-zA-Z][-._a-zA-Z0-9]*`).
fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || "-._".contains(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

/// `$(VAR)` references to earlier variables expanded, `$$` escaping (kubernetes
/// `third_party/forked/golang/expansion/expand.go`); an unknown `$(VAR)` stays as written.
fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The downward API fields a `fieldRef` may name.
fn field_ref(pod: &Value, path: &str) -> Option<String> {
    let direct = match path {
        "metadata.name" => "/metadata/name",
        "metadata.namespace" => "/metadata/namespace",
        "metadata.uid" => "/metadata/uid",
        "spec.nodeName" => "/spec/nodeName",
        "spec.serviceAccountName" => "/spec/serviceAccountName",
        "status.podIP" => return Some("10.244.0.20".into()),
        "status.hostIP" => return Some("10.0.0.1".into()),
        _ => {
            let (field, key) = path.strip_suffix("']").and_then(|p| p.split_once("['"))?;
            let map = match field {
                "metadata.labels" => "labels",
                "metadata.annotations" => "annotations",
                _ => return None,
            };
            return Some(
                pod["metadata"][map][key]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    };
    Some(s(pod, direct).to_string())
}

/// A Secret's (decoded) or a ConfigMap's data (`data` and `binaryData`), if it exists.
fn source_data(
    state: &State,
    kind: &str,
    ns: &str,
    name: &str,
) -> Option<BTreeMap<String, Vec<u8>>> {
    let plural = if kind == "Secret" {
        "secrets"
    } else {
        "configmaps"
    };
    let rt = state.find_type("", plural)?;
    let obj = state.get(&rt, ns, name)?;
    let b64 = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap_or_default()
    };
    let mut out = BTreeMap::new();
    for (k, v) in obj["data"].as_object().into_iter().flatten() {
        let bytes = if kind == "Secret" {
            b64(v)
        } else {
            v.as_str().unwrap_or_default().as_bytes().to_vec()
        };
        out.insert(k.clone(), bytes);
    }
    for (k, v) in obj["binaryData"].as_object().into_iter().flatten() {
        out.insert(k.clone(), b64(v));
    }
    Some(out)
}

/// The files of a volume: `configMap`, `secret`, `emptyDir`, `projected` (service-account
/// token, ConfigMap, Secret sources). `items` select and rename keys.
fn volume_files(state: &mut State, ns: &str, sa: &str, volume: &Value) -> Result<Files, String> {
    let keyed = |state: &State, kind: &str, name: &str, src: &Value| -> Result<Files, String> {
        let Some(data) = source_data(state, kind, ns, name) else {
            if src["optional"] == true {
                return Ok(Vec::new());
            }
            return Err(format!("{} \"{name}\" not found", kind.to_lowercase()));
        };
        match src["items"].as_array() {
            Some(items) => items
                .iter()
                .map(|i| {
                    let key = s(i, "/key");
                    data.get(key)
                        .map(|v| (s(i, "/path").to_string(), v.clone()))
                        .ok_or_else(|| {
                            format!("configmap references non-existent config key: {key}")
                        })
                })
                .collect(),
            None => Ok(data.into_iter().collect()),
        }
    };
    if volume.get("emptyDir").is_some() {
        Ok(Vec::new())
    } else if let Some(cm) = volume.get("configMap") {
        keyed(state, "ConfigMap", s(cm, "/name"), cm)
    } else if let Some(secret) = volume.get("secret") {
        keyed(state, "Secret", s(secret, "/secretName"), secret)
    } else if let Some(sources) = volume
        .pointer("/projected/sources")
        .and_then(Value::as_array)
    {
        let mut files = Vec::new();
        for src in sources {
            if let Some(t) = src.get("serviceAccountToken") {
                files.push((
                    s(t, "/path").to_string(),
                    state.issue_token(ns, sa).into_bytes(),
                ));
            } else if let Some(cm) = src.get("configMap") {
                files.extend(keyed(state, "ConfigMap", s(cm, "/name"), cm)?);
            } else if let Some(secret) = src.get("secret") {
                files.extend(keyed(state, "Secret", s(secret, "/name"), secret)?);
            } else {
                return Err(
                    "only serviceAccountToken, configMap and secret projections are emulated"
                        .into(),
                );
            }
        }
        Ok(files)
    } else {
        Err("only configMap, secret, emptyDir and projected volumes are emulated".into())
    }
}

/// Single-quotes `s` for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Runs the container to completion (blocking), then records its log and final state.
fn execute(shared: &Shared, run: Run) {
    let (code, log) = match spawn(shared, &run) {
        Ok(r) => r,
        Err(e) => (
            128,
            format!("kube-testserver: cannot start the container: {e}\n"),
        ),
    };
    let mut state = shared.lock();
    state.kubelet.logs.insert(
        (
            run.namespace.clone(),
            run.pod.clone(),
            run.container.clone(),
        ),
        log,
    );
    let Some(pod_type) = state.find_type("", "pods") else {
        return;
    };
    let Some(pod) = state.get(&pod_type, &run.namespace, &run.pod).cloned() else {
        return;
    };
    let (phase, reason) = if code == 0 {
        ("Succeeded", "Completed")
    } else {
        ("Failed", "Error")
    };
    set_container_state(
        &mut state,
        &pod,
        phase,
        json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": run.started_at, "finishedAt": now_rfc3339(), "containerID": format!("kube-testserver://{}", pod["metadata"]["uid"].as_str().unwrap_or_default())}}),
    );
}

/// The container process: `unshare -m` runs a script that mounts a tmpfs on `/run`, binds the
/// image's binary and every volume at its path (an overlay on the nearest existing ancestor
/// makes a missing parent), drops to the pod's user and execs. Returns the exit code (128 +
/// signal when killed) and stdout and stderr interleaved.
fn spawn(shared: &Shared, run: &Run) -> std::io::Result<(i32, String)> {
    let dir = tempfile::Builder::new().prefix("kubelet-pod-").tempdir()?;
    let root = dir.path();
    let mut mounts: Vec<(PathBuf, &str, bool)> = Vec::new();
    for (i, (to, files, read_only)) in run.mounts.iter().enumerate() {
        let d = root.join(format!("volume-{i}"));
        std::fs::create_dir_all(&d)?;
        for (rel, bytes) in files {
            let path = d.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, bytes)?;
        }
        mounts.push((d, to.as_str(), *read_only));
    }
    // The pod's user must be able to reach the files (emptyDirs are world-writable, as the
    // kubelet makes them).
    chmod_tree(root);
    for (i, (_, files, _)) in run.mounts.iter().enumerate() {
        if files.is_empty() {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(
                root.join(format!("volume-{i}")),
                std::fs::Permissions::from_mode(0o1777),
            )?;
        }
    }
    // A mount over a folder holding the temporary directory (an emptyDir on `/tmp`) goes last.
    mounts.sort_by_key(|(_, to, _)| root.starts_with(to));
    let entry = format!(
        "/run/kubelet-image/{}",
        run.binary
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "entrypoint".into())
    );
    // The binary goes into the fresh `/run` first: a volume on `/tmp` would hide a binary under
    // `/tmp`, and the pod's user may not traverse the folders holding it.
    // So is the pod's `/etc/hosts`, bound last (an overlay made on `/etc` for a volume would
    // hide it).
    let hosts = root.join("hosts");
    std::fs::write(&hosts, &run.hosts)?;
    let mut script = format!(
        "set -e\nmount -t tmpfs tmpfs /run\nmkdir -p /run/kubelet-image\n: > {e}\nmount --bind {b} {e}\ncp {h} /run/kubelet-image/hosts\n",
        e = quote(&entry),
        b = quote(&run.binary.display().to_string()),
        h = quote(&hosts.display().to_string())
    );
    for (i, (from, to, read_only)) in mounts.iter().enumerate() {
        let to_path = Path::new(to);
        let mut existing = to_path.parent().unwrap_or(Path::new("/"));
        while !existing.exists() {
            existing = existing.parent().unwrap_or(Path::new("/"));
        }
        let existing = existing.canonicalize()?;
        if !to_path.exists() && !existing.starts_with("/run") {
            let (u, w) = (
                root.join(format!("upper-{i}")),
                root.join(format!("work-{i}")),
            );
            script += &format!(
                "mkdir -p {u} {w}\nmount -t overlay overlay -o lowerdir={e},upperdir={u},workdir={w} {e}\n",
                u = quote(&u.display().to_string()),
                w = quote(&w.display().to_string()),
                e = quote(&existing.display().to_string())
            );
        }
        let to = quote(to);
        script += &format!(
            "mkdir -p {to}\nmount --bind {} {to}\n",
            quote(&from.display().to_string())
        );
        if *read_only {
            script += &format!("mount -o remount,bind,ro {to}\n");
        }
    }
    script += "mount --bind /run/kubelet-image/hosts /etc/hosts\n";
    script += &format!("cd {}\n", quote(&run.working_dir));
    match run.user {
        Some((uid, gid)) => {
            script += &format!(
                "exec setpriv --reuid {uid} --regid {gid} --clear-groups --no-new-privs {} \"$@\"\n",
                quote(&entry)
            )
        }
        None => script += &format!("exec {} \"$@\"\n", quote(&entry)),
    }
    let log_path = root.join("container.log");
    let log = std::fs::File::create(&log_path)?;
    // `unshare` without `--fork` execs the script, which execs the binary: one process.
    let mut child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script, "pod"])
        .args(&run.args)
        .env_clear()
        .envs(run.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    {
        // Under the lock: either `kill_all` sees this process, or it sees `stopping`.
        let mut state = shared.lock();
        if state.kubelet.stopping {
            let _ = child.kill();
        } else {
            state.kubelet.running.insert(run.uid.clone(), child.id());
        }
    }
    let status = child.wait();
    shared.lock().kubelet.running.remove(&run.uid);
    let status = status?;
    use std::os::unix::process::ExitStatusExt as _;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let text = String::from_utf8_lossy(&std::fs::read(&log_path)?).into_owned();
    Ok((code, text))
}

fn chmod_tree(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = if dir.is_dir() { 0o755 } else { 0o644 };
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode));
    if dir.is_dir() {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            chmod_tree(&e.path());
        }
    }
}

/// Kills the processes of running pods (the server is stopping; nothing waits for them).
pub fn kill_all(state: &mut State) {
    state.kubelet.stopping = true;
    let uids: Vec<String> = state.kubelet.running.keys().cloned().collect();
    for uid in uids {
        kill(state, &uid);
    }
}

/// Kills the process of pod `uid`, if it runs (SIGKILL: no grace period is emulated).
pub fn kill(state: &mut State, uid: &str) {
    if let Some(pid) = state.kubelet.running.remove(uid) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// `GET pods/NAME/log` (`container`, `tailLines`): the container's stdout and stderr once it
/// ran; what the kubelet answers for a container still waiting
/// (`pkg/kubelet/kubelet_pods.go`, `validateContainerLogStatus`); empty for pods it did not run.
pub fn log(state: &State, pod: &Value, query: &HashMap<String, String>) -> Result<String, String> {
    let ns = s(pod, "/metadata/namespace");
    let name = s(pod, "/metadata/name");
    let containers = strings(&json!(
        pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["name"].clone())
            .collect::<Vec<_>>()
    ));
    let container = match query.get("container").filter(|c| !c.is_empty()) {
        Some(c) if containers.contains(c) => c.clone(),
        Some(c) => {
            return Err(format!("container {c} is not valid for pod {name}"));
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            ));
        }
    };
    let Some(text) = state
        .kubelet
        .logs
        .get(&(ns.to_string(), name.to_string(), container.clone()))
    else {
        let waiting = pod
            .pointer("/status/containerStatuses/0/state/waiting/reason")
            .and_then(Value::as_str);
        return match waiting {
            Some(reason) => Err(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
            )),
            None => Ok(String::new()),
        };
    };
    Ok(
        match query.get("tailLines").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => {
                let lines: Vec<&str> = text.split_inclusive('\n').collect();
                lines[lines.len().saturating_sub(n)..].concat()
            }
            None => text.clone(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_the_kubelet() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("a$b", &env), "a$b");
    }

    #[test]
    fn env_names() {
        assert!(valid_env_name("AWS_REGION"));
        assert!(valid_env_name("a.b-c"));
        assert!(!valid_env_name("1A"));
        assert!(!valid_env_name("A B"));
    }
}
