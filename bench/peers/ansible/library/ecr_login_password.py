#!/usr/bin/python
# `aws ecr get-login-password` for one registry: the password of the registry's account's
# authorization token. No module in amazon.aws or community.aws returns it (community.aws.ecs_ecr
# manages repositories), so: boto3 through amazon.aws's AnsibleAWSModule. Read-only; the password
# is returned (the playbook sets no_log on the task).
DOCUMENTATION = r"""
module: ecr_login_password
short_description: The docker login password of an ECR registry
options:
  registry_id: {description: the registry's account id, required: true, type: str}
extends_documentation_fragment: [amazon.aws.common.modules, amazon.aws.region.modules, amazon.aws.boto3]
"""

import base64

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

try:
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:
    pass


def main():
    module = AnsibleAWSModule(argument_spec=dict(registry_id=dict(required=True)), supports_check_mode=True)
    try:
        data = module.client("ecr").get_authorization_token(registryIds=[module.params["registry_id"]])
    except (BotoCoreError, ClientError) as e:
        module.fail_json_aws(e, msg="get-authorization-token failed")
    token = base64.b64decode(data["authorizationData"][0]["authorizationToken"]).decode()
    password = token.split(":", 1)[1]
    module.exit_json(changed=False, password=password)


if __name__ == "__main__":
    main()
