"""Read ecs/stack.yaml as CloudFormation would, for one choice of parameters, so tests can check what it deploys.

cfn-lint's own YAML reader handles the short intrinsic tags (!Ref, !Sub, ...). The resolver below evaluates the
intrinsics the template uses (Ref, Fn::Sub, Fn::GetAtt, Fn::If with its conditions, Fn::Select, Fn::Join,
Fn::Base64) with stand-in values for what only AWS knows (account, ARNs, endpoints), drops AWS::NoValue, and leaves
out resources whose condition is false. `api_shape` turns a resource's CloudFormation properties (PascalCase) into
the ECS API's request shape (camelCase), which botocore's service model then validates.
"""

import re
from pathlib import Path
from typing import Any

from cfnlint.decode import decode_str

STACK = Path(__file__).resolve().parents[2] / "ecs" / "stack.yaml"
REGION, ACCOUNT, STACK_NAME = "eu-west-1", "123456789012", "imagecredits"
NO_VALUE = object()
PSEUDO = {
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::StackName": STACK_NAME,
    "AWS::Partition": "aws",
    "AWS::NoValue": NO_VALUE,
}
# Values for parameters without a default: what an operator would pass.
OPERATOR_PARAMETERS = {
    "DomainName": "shop.example.com",
    "SupportContact": "support@shop.example.com",
    "DiscordInviteUrl": "https://discord.gg/example",
    "CertificateArn": f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/0e3f5c9a-1111-2222-3333-444455556666",
    "VpcId": "vpc-0abc",
    "LoadBalancerSubnetIds": ["subnet-0aaa", "subnet-0bbb"],
    "InstanceSubnetIds": ["subnet-0ccc", "subnet-0ddd"],
    "DataAvailabilityZone": f"{REGION}a",
    "EcsAmiId": "ami-0123456789abcdef0",
    "ImageTag": "2026-12-01.1",
    "MigrateImageTag": "2026-12-01.1",
    "Running": "true",
}


def load_raw() -> dict:
    template, matches = decode_str(STACK.read_text())
    assert not matches, matches
    return template


class Stack:
    """The template with its intrinsics resolved for the given parameter values."""

    def __init__(self, **parameters: Any) -> None:
        self.raw = load_raw()
        declared = self.raw["Parameters"]
        self.parameters = {name: spec.get("Default") for name, spec in declared.items()}
        self.parameters.update(OPERATOR_PARAMETERS)
        self.parameters.update(parameters)
        unknown = set(self.parameters) - set(declared)
        assert not unknown, unknown
        self.conditions = {name: self._condition(body) for name, body in self.raw.get("Conditions", {}).items()}
        self.resources = {
            name: {**spec, "Properties": self.resolve(spec.get("Properties", {}))}
            for name, spec in self.raw["Resources"].items()
            if "Condition" not in spec or self.conditions[spec["Condition"]]
        }

    def of_type(self, kind: str) -> dict[str, dict]:
        return {name: r["Properties"] for name, r in self.resources.items() if r["Type"] == kind}

    # --- conditions and intrinsics ------------------------------------------------------------------------------------

    def _condition(self, body: Any) -> bool:
        ((fn, args),) = body.items()
        if fn == "Fn::Equals":
            return self.resolve(args[0]) == self.resolve(args[1])
        if fn == "Fn::And":
            return all(self._condition(a) for a in args)
        if fn == "Fn::Or":
            return any(self._condition(a) for a in args)
        if fn == "Fn::Not":
            return not self._condition(args[0])
        if fn == "Condition":
            return self._condition(self.raw["Conditions"][args])
        raise AssertionError(f"unsupported condition {fn}")

    def _ref(self, name: str) -> Any:
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.parameters:
            return self.parameters[name]
        resource = self.raw["Resources"][name]
        if resource["Type"] == "AWS::SecretsManager::Secret":
            return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{STACK_NAME}/{name}-AbCdEf"
        if resource["Type"] == "AWS::ECS::TaskDefinition":
            return f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{STACK_NAME}-{name}:1"
        return f"{name.lower()}-physical-id"

    def _get_att(self, name: str, attribute: str) -> str:
        if attribute.endswith("Arn") or attribute == "Arn":
            service = {"AWS::IAM::Role": "iam", "AWS::ECS::Cluster": "ecs", "AWS::S3::Bucket": "s3"}.get(
                self.raw["Resources"][name]["Type"], "secretsmanager"
            )
            if attribute == "MasterUserSecret.SecretArn":
                return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!db-0123-AbCdEf"
            return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{name.lower()}"
        return {"Endpoint.Address": "imagecredits.abc.eu-west-1.rds.amazonaws.com", "Endpoint.Port": "5432"}.get(
            attribute, f"{name}.{attribute}"
        )

    def _sub(self, text: str, variables: dict) -> str:
        def replace(match: re.Match) -> str:
            inner = match.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in variables:
                return str(self.resolve(variables[inner]))
            if "." in inner and inner.split(".", 1)[0] in self.raw["Resources"]:
                return str(self._get_att(*inner.split(".", 1)))
            return str(self._ref(inner))

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.resolve(item) for item in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, args),) = node.items()
            if key == "Ref":
                return self._ref(args)
            if key == "Fn::GetAtt":
                name, attribute = args if isinstance(args, list) else args.split(".", 1)
                return self._get_att(name, attribute)
            if key == "Fn::Sub":
                text, variables = (args, {}) if isinstance(args, str) else args
                return self._sub(text, variables)
            if key == "Fn::If":
                condition, when_true, when_false = args
                return self.resolve(when_true if self.conditions[condition] else when_false)
            if key == "Fn::Select":
                return self.resolve(args[1])[int(args[0])]
            if key == "Fn::Join":
                return args[0].join(str(v) for v in self.resolve(args[1]))
            if key == "Fn::Base64":
                return self.resolve(args)
            assert not key.startswith("Fn::"), f"unsupported intrinsic {key}"
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in node.items()) if v is not NO_VALUE}


# Maps whose keys are data (log driver options, labels), not property names: keep them as written.
_FREE_FORM = {"Options", "DockerLabels"}


def api_shape(properties: Any) -> Any:
    """CloudFormation's PascalCase properties as the ECS API's camelCase request."""
    if isinstance(properties, list):
        return [api_shape(item) for item in properties]
    if isinstance(properties, dict):
        return {
            key[0].lower() + key[1:]: value if key in _FREE_FORM else api_shape(value)
            for key, value in properties.items()
        }
    return properties
