#!/usr/bin/env bash
# The deploy guide (shared/seed/deploy-guide.txt) as a bash script: the `aws`, `kubectl` and `helm`
# commands a user runs by hand, with the guide's placeholders filled in from
# recipes/customer.example.yaml and the guide's mistakes corrected the way the recipes' templates
# correct them (docs/recipes.md, "Corrections"), so the end state equals `collate-run
# recipes/full.rhai` with `steps: {reindex: false}`. bench/bench.py checks that it does.
#
# The corrections, besides the values files:
#   - `eksctl utils associate-iam-oidc-provider` -> `aws iam create-open-id-connect-provider` (no eksctl);
#   - the trust policies also pin the audience (`:aud = sts.amazonaws.com`), as the recipes do;
#   - the bucket gets default encryption (AES256) and a public access block, as the recipes do;
#   - es-credentials, which the guide's values reference but never create, is created;
#   - the ECR password is the token of the registry's account (`get-authorization-token --registry-ids`,
#     what `get-login-password --profile ecr-collate` returns with Collate's credentials);
#   - helm gets the recipes' flags (`--reset-values --wait=watcher --timeout 60s`);
#   - `kubectl annotate --overwrite`, so the annotation command can be repeated.
# A re-run is the same script: "already exists" errors of the create commands are ignored (the
# cheapest a re-run can be by hand; it does not notice drift: an existing object is never compared).
#
# Environment (bench/bench.py sets it): AWS_ENDPOINT_URL (moto), AWS credentials/region, KUBECONFIG
# (the Kubernetes API test server), HELM_BIN and HELM_*_HOME, CHARTS (the real charts, packaged),
# COLLATE_DB_PASSWORD, COLLATE_ES_PASSWORD, ARGO_DB_PASSWORD, COLLATE_ADMIN_PASSWORD. WORK: a scratch folder.
set -euo pipefail

: "${AWS_ENDPOINT_URL:?}" "${KUBECONFIG:?}" "${CHARTS:?}" "${WORK:?}"
: "${COLLATE_DB_PASSWORD:?}" "${COLLATE_ES_PASSWORD:?}" "${ARGO_DB_PASSWORD:?}" "${COLLATE_ADMIN_PASSWORD:?}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AWS_BIN="${AWS_BIN:-$ROOT/.venv-test/bin/aws}"
KUBECTL="${KUBECTL:-$ROOT/.tools/bin/kubectl}"
HELM="${HELM_BIN:-$ROOT/.tools/bin/helm}"

# With GUIDE_TIMES=FILE, each command appends "tool seconds" to FILE (the per-tool breakdown).
timed() {
    local tool=$1 start=$EPOCHREALTIME rc=0
    shift
    "$@" || rc=$?
    [[ -z ${GUIDE_TIMES:-} ]] || echo "$tool $start $EPOCHREALTIME" >>"$GUIDE_TIMES"
    return $rc
}
aws() { timed aws "$AWS_BIN" --endpoint-url "$AWS_ENDPOINT_URL" "$@"; }
kubectl() { timed kubectl "$KUBECTL" "$@"; }
helm() { timed helm "$HELM" "$@"; }

# Runs a create command; "already exists" is success (a re-run), any other failure stops the script.
create() {
    local err
    if ! err="$("$@" 2>&1 >/dev/null)"; then
        case "$err" in
            *AlreadyExists*|*"already exists"*|*BucketAlreadyOwnedByYou*) ;;
            *) echo "$err" >&2; return 1 ;;
        esac
    fi
}

# The placeholders (recipes/customer.example.yaml).
CLUSTER_NAME=acme-eks
AWS_REGION=eu-west-1
BUCKET=collate-argo-artifacts-$AWS_REGION
ECR_REGISTRY=118146679784.dkr.ecr.eu-west-1.amazonaws.com
ARGO_NS=argo-workflows
NAMESPACE_NAME=collate
DB_USERNAME=argo

mkdir -p "$WORK"
cd "$WORK"

# --- AWS Prerequisites ------------------------------------------------------------------------
AWS_ACCOUNT_ID=$(aws sts get-caller-identity --query Account --output text)
OIDC_ISSUER=$(aws eks describe-cluster --name "$CLUSTER_NAME" \
    --query "cluster.identity.oidc.issuer" --output text | sed 's|https://||')
echo "OIDC Issuer: $OIDC_ISSUER"
create aws iam create-open-id-connect-provider --url "https://$OIDC_ISSUER" \
    --client-id-list sts.amazonaws.com --thumbprint-list

create aws s3 mb "s3://$BUCKET" --region "$AWS_REGION"
aws s3api put-bucket-encryption --bucket "$BUCKET" --server-side-encryption-configuration \
    '{"Rules":[{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"AES256"}}]}'
aws s3api put-public-access-block --bucket "$BUCKET" --public-access-block-configuration \
    BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true

# role NAME NAMESPACE SERVICE_ACCOUNT POLICY
role() {
    cat >"$1-trust-policy.json" <<EOF
{
"Version": "2012-10-17",
"Statement": [{
"Effect": "Allow",
"Principal": {
"Federated": "arn:aws:iam::${AWS_ACCOUNT_ID}:oidc-provider/${OIDC_ISSUER}"
},
"Action": "sts:AssumeRoleWithWebIdentity",
"Condition": {
"StringEquals": {
"${OIDC_ISSUER}:sub": "system:serviceaccount:$2:$3",
"${OIDC_ISSUER}:aud": "sts.amazonaws.com"
}
}
}]
}
EOF
    create aws iam create-role --role-name "$1" --assume-role-policy-document "file://$1-trust-policy.json"
    aws iam attach-role-policy --role-name "$1" --policy-arn "arn:aws:iam::aws:policy/$4"
}
role collate-argo-controller-role "$ARGO_NS" argo-workflows-controller-sa AmazonS3FullAccess
role collate-argo-server-role "$ARGO_NS" argo-workflows-server-sa AmazonS3ReadOnlyAccess
role collate-server-role "$NAMESPACE_NAME" openmetadata AmazonS3FullAccess
role collate-ingestion-role "$NAMESPACE_NAME" om-role AmazonS3FullAccess

# --- Setup AWS ECR ----------------------------------------------------------------------------
# `aws ecr get-login-password --profile ecr-collate`: the token of the registry's account (the
# profile Collate gives). moto's tokens name the registry id, so ask for that registry's token.
ECR_PASSWORD=$(aws ecr get-authorization-token --registry-ids "${ECR_REGISTRY%%.*}" \
    --query 'authorizationData[0].authorizationToken' --output text | base64 -d | cut -d: -f2-)
create kubectl create namespace "$NAMESPACE_NAME"
create kubectl create secret docker-registry ecr-registry-creds \
    --docker-server="$ECR_REGISTRY" \
    --docker-username=AWS \
    --docker-password="$ECR_PASSWORD" \
    --namespace "$NAMESPACE_NAME"

# --- Install Argo Workflows -------------------------------------------------------------------
# (helm repo add/update: the charts are the packaged upstream archives, as in the recipes' bench config.)
create kubectl create namespace "$ARGO_NS"
create kubectl create secret generic argo-db-credentials \
    --from-literal=username="$DB_USERNAME" \
    --from-literal=password="$ARGO_DB_PASSWORD" \
    --namespace "$ARGO_NS"

cat >argo-workflows.values.yml <<EOF
controller:
  name: workflow-controller
  serviceAccount:
    create: true
    name: argo-workflows-controller-sa
    annotations:
      eks.amazonaws.com/role-arn: "arn:aws:iam::${AWS_ACCOUNT_ID}:role/collate-argo-controller-role"
  workflowNamespaces:
    - collate
  workflowDefaults:
    spec:
      serviceAccountName: om-role
  persistence:
    archive: true
    postgresql:
      host: collate.abc123.eu-west-1.rds.amazonaws.com
      port: 5432
      database: argo
      tableName: argo_workflows
      userNameSecret:
        name: argo-db-credentials
        key: username
      passwordSecret:
        name: argo-db-credentials
        key: password
      ssl: true
      sslMode: require
server:
  serviceAccount:
    create: true
    name: argo-workflows-server-sa
    annotations:
      eks.amazonaws.com/role-arn: "arn:aws:iam::${AWS_ACCOUNT_ID}:role/collate-argo-server-role"
  authModes:
    - client
  extraArgs:
    - "--request-timeout=5m"
useStaticCredentials: false
artifactRepository:
  archiveLogs: true
  s3:
    endpoint: s3.amazonaws.com
    bucket: ${BUCKET}
    keyFormat: 'workflows/{{workflow.namespace}}/{{workflow.name}}/{{pod.name}}'
    insecure: false
    region: ${AWS_REGION}
    useSDKCreds: true
    encryptionOptions:
      enableEncryption: true
EOF
helm upgrade --install argo-workflows "$CHARTS/argo-workflows-0.45.23.tgz" \
    --version 0.45.23 \
    --namespace "$ARGO_NS" \
    --values argo-workflows.values.yml \
    --reset-values --wait=watcher --timeout 60s >/dev/null

# --- Collate ----------------------------------------------------------------------------------
create kubectl create namespace "$NAMESPACE_NAME"
create kubectl create serviceaccount om-role -n "$NAMESPACE_NAME"
kubectl annotate --overwrite serviceaccount -n "$NAMESPACE_NAME" om-role \
    "eks.amazonaws.com/role-arn=arn:aws:iam::${AWS_ACCOUNT_ID}:role/collate-ingestion-role" >/dev/null
kubectl apply -n "$NAMESPACE_NAME" -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: om-role.service-account-token
  annotations:
    kubernetes.io/service-account.name: om-role
type: kubernetes.io/service-account-token
EOF

cat >om-argo-role.yml <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: om-argo-role
  namespace: ${NAMESPACE_NAME}
rules:
- verbs: [list, watch, create, update, patch, get, delete]
  apiGroups:
  - argoproj.io
  resources:
  - workflows
- verbs: [list, watch, patch, get]
  apiGroups:
  - ''
  resources:
  - pods/log
  - pods
- verbs: [list, watch, create, update, patch, get, delete]
  apiGroups:
  - argoproj.io
  resources:
  - cronworkflows
- verbs: [create, patch]
  apiGroups:
  - argoproj.io
  resources:
  - workflowtaskresults
EOF
kubectl apply -f om-argo-role.yml >/dev/null
create kubectl create rolebinding om-argo-role-binding \
    --role=om-argo-role \
    --serviceaccount="$NAMESPACE_NAME:om-role" \
    --namespace "$NAMESPACE_NAME"

create kubectl create secret generic db-credentials \
    --from-literal=password="$COLLATE_DB_PASSWORD" \
    --namespace "$NAMESPACE_NAME"
create kubectl create secret generic es-credentials \
    --from-literal=password="$COLLATE_ES_PASSWORD" \
    --namespace "$NAMESPACE_NAME"

cat >openmetadata.values.yml <<EOF
replicaCount: 1
openmetadata:
  config:
    elasticsearch:
      host: vpc-collate-abc123.eu-west-1.es.amazonaws.com
      port: 443
      scheme: https
      searchType: opensearch
      auth:
        enabled: true
        username: collate
        password:
          secretRef: es-credentials
          secretKey: password
    database:
      host: collate.abc123.eu-west-1.rds.amazonaws.com
      port: 5432
      driverClass: org.postgresql.Driver
      dbScheme: postgresql
      databaseName: openmetadata_db
      auth:
        username: openmetadata_user
        password:
          secretRef: db-credentials
          secretKey: password
      dbParams: "allowPublicKeyRetrieval=true&useSSL=true&serverTimezone=UTC"
    # The customer's administrators and domain (the example config's `auth:`; the guide leaves
    # them to the UI, with the chart's well-known default administrator until then).
    authorizer:
      initialAdmins: ["jane.doe:${COLLATE_ADMIN_PASSWORD}"]
      principalDomain: acme.com
      enforcePrincipalDomain: false
      allowedEmailRegistrationDomains: ["all"]
    authentication:
      provider: basic
      clientType: public
      enableSelfSignup: false
    pipelineServiceClientConfig:
      type: argoWorkflows
      metadataApiEndpoint: "http://openmetadata:8585/api"
      argoWorkflows:
        apiEndpoint: "http://argo-workflows-server.argo-workflows:2746"
        ingestionImage: "118146679784.dkr.ecr.eu-west-1.amazonaws.com/collate-customers-ingestion-slim-eu-west-1:om-1.12.3-cl-1.12.3"
        imagePullSecrets: ecr-registry-creds
        serviceAccountName: om-role
image:
  repository: 118146679784.dkr.ecr.eu-west-1.amazonaws.com/collate-customers-eu-west-1
  tag: om-1.12.3-cl-1.12.3
  pullPolicy: IfNotPresent
imagePullSecrets:
  - name: ecr-registry-creds
# The guide's extraEnvs and its environment-variable table (defaults where the example config sets none).
extraEnvs:
  - name: ARGO_TOKEN
    valueFrom:
      secretKeyRef:
        name: "om-role.service-account-token"
        key: "token"
  - name: ARGO_IMAGE_PULL_SECRETS
    value: ecr-registry-creds
  - name: ARGO_INGESTION_IMAGE
    value: "118146679784.dkr.ecr.eu-west-1.amazonaws.com/collate-customers-ingestion-slim-eu-west-1:om-1.12.3-cl-1.12.3"
  - name: ARGO_NAMESPACE
    value: ${NAMESPACE_NAME}
  - name: ARGO_SERVER_CERTIFICATE_PATH
    value: ""
  - name: ARGO_TEST_CONNECTION_BACKOFF_TIME
    value: "5"
  - name: ARGO_WORKFLOW_CPU_LIMIT
    value: 1000m
  - name: ARGO_WORKFLOW_CPU_REQUEST
    value: 200m
  - name: ARGO_WORKFLOW_CUSTOMER_TOLERATION
    value: argo
  - name: ARGO_WORKFLOW_EXECUTOR_SERVICE_ACCOUNT_NAME
    value: om-role
  - name: ARGO_WORKFLOW_MEMORY_LIMIT
    value: 4096Mi
  - name: ARGO_WORKFLOW_MEMORY_REQUEST
    value: 256Mi
  - name: ASSET_UPLOADER_ENABLE
    value: "true"
  - name: ASSET_UPLOADER_PROVIDER
    value: "s3"
  - name: ASSET_UPLOADER_MAX_FILE_SIZE
    value: "10485760"
  - name: ASSET_UPLOADER_S3_BUCKET_NAME
    value: "${BUCKET}"
  - name: ASSET_UPLOADER_S3_REGION
    value: "${AWS_REGION}"
  - name: ASSET_UPLOADER_S3_PREFIX_PATH
    value: "assets/collate"
serviceAccount:
  create: true
  name: "openmetadata"
  annotations:
    eks.amazonaws.com/role-arn: arn:aws:iam::${AWS_ACCOUNT_ID}:role/collate-server-role
EOF
helm upgrade --install openmetadata "$CHARTS/openmetadata-1.12.4.tgz" \
    --version 1.12.4 \
    --values openmetadata.values.yml \
    --namespace "$NAMESPACE_NAME" \
    --reset-values --wait=watcher --timeout 60s >/dev/null
echo "guide: done"
