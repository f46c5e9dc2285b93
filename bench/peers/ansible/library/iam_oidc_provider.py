#!/usr/bin/python
# An IAM OIDC identity provider, idempotent and check-mode aware: `eksctl utils
# associate-iam-oidc-provider` / `aws iam create-open-id-connect-provider` as an Ansible module.
# amazon.aws has no module for it (community.aws neither), so: boto3 through amazon.aws's
# AnsibleAWSModule. Compares the client ids and thumbprints of an existing provider and updates them.
DOCUMENTATION = r"""
module: iam_oidc_provider
short_description: Ensure an IAM OIDC identity provider
options:
  url: {description: the issuer URL, required: true, type: str}
  client_ids: {description: audiences, type: list, elements: str, default: [sts.amazonaws.com]}
  thumbprints: {description: server certificate thumbprints (empty - AWS decides), type: list, elements: str, default: []}
extends_documentation_fragment: [amazon.aws.common.modules, amazon.aws.region.modules, amazon.aws.boto3]
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

try:
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:
    pass


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            url=dict(required=True),
            client_ids=dict(type="list", elements="str", default=["sts.amazonaws.com"]),
            thumbprints=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    iam = module.client("iam")
    url, ids, thumbs = module.params["url"], module.params["client_ids"], module.params["thumbprints"]
    host = url.replace("https://", "", 1)
    try:
        arn = next(
            (p["Arn"] for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
             if p["Arn"].split(":oidc-provider/", 1)[1] == host),
            None,
        )
        if arn is None:
            if not module.check_mode:
                arn = iam.create_open_id_connect_provider(Url=url, ClientIDList=ids, ThumbprintList=thumbs)[
                    "OpenIDConnectProviderArn"]
            module.exit_json(changed=True, arn=arn, diff=dict(before={}, after=dict(url=url, client_ids=ids)))
        have = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)
        changed = False
        for cid in sorted(set(ids) - set(have.get("ClientIDList", []))):
            changed = True
            if not module.check_mode:
                iam.add_client_id_to_open_id_connect_provider(OpenIDConnectProviderArn=arn, ClientID=cid)
        if thumbs and sorted(thumbs) != sorted(have.get("ThumbprintList", [])):
            changed = True
            if not module.check_mode:
                iam.update_open_id_connect_provider_thumbprint(OpenIDConnectProviderArn=arn, ThumbprintList=thumbs)
    except (BotoCoreError, ClientError) as e:
        module.fail_json_aws(e, msg="OIDC provider")
    module.exit_json(changed=changed, arn=arn)


if __name__ == "__main__":
    main()
