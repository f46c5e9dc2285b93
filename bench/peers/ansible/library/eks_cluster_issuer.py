#!/usr/bin/python
# The OIDC issuer of an EKS cluster (`aws eks describe-cluster --query cluster.identity.oidc.issuer`).
# Neither amazon.aws nor community.aws has an EKS read module (community.aws.eks_cluster creates
# clusters), so this is the one boto3 call through amazon.aws's AnsibleAWSModule: same credentials,
# region and endpoint_url handling as the collection's own modules.
DOCUMENTATION = r"""
module: eks_cluster_issuer
short_description: The OIDC issuer URL of an EKS cluster
options:
  name: {description: the cluster, required: true, type: str}
extends_documentation_fragment: [amazon.aws.common.modules, amazon.aws.region.modules, amazon.aws.boto3]
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

try:
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore


def main():
    module = AnsibleAWSModule(argument_spec=dict(name=dict(required=True)), supports_check_mode=True)
    try:
        cluster = module.client("eks").describe_cluster(name=module.params["name"])["cluster"]
    except (BotoCoreError, ClientError) as e:
        module.fail_json_aws(e, msg="describe-cluster failed")
    issuer = cluster["identity"]["oidc"]["issuer"]
    module.exit_json(changed=False, issuer=issuer, host=issuer.replace("https://", "", 1))


if __name__ == "__main__":
    main()
