"""The aws environment against moto in server mode (a real AWS-shaped endpoint on
loopback), through the Airflow AWS connection, providers-amazon's EksHook and boto3.

moto creates no EC2 instances for node groups and no EKS cluster security group; where a
test needs them it creates them itself, tagged as EKS tags them, and says so.
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from datetime import timedelta

import pytest
import yaml

from meshbench.backend import StepFailed
from meshbench.environments.aws import (
    EKS_CLUSTER_TAG,
    EKS_NODE_CLUSTER_TAG,
    NETWORK_TEMPLATE,
    TAG_CREATED_AT,
    TAG_DAG_ID,
    TAG_KEEP,
    TAG_RUN_ID,
    TAG_SLUG,
    AwsProvider,
    EksClusterAccess,
)
from meshbench.environments.provider import isoformat, parse_timestamp, utcnow
from tests.cloud.conftest import AWS_SECRET, run_context, with_environment


@pytest.fixture
def provider(moto, aws_config) -> AwsProvider:
    return AwsProvider(aws_config)


def captured_requests(provider: AwsProvider, operation: str) -> list[dict]:
    """Parameters of every ``operation`` call the provider's EKS client sends."""
    calls: list[dict] = []

    def record(params, **_):
        calls.append(dict(params))

    provider.eks.meta.events.register(f"provide-client-params.eks.{operation}", record)
    return calls


def fake_nodes(moto, provider: AwsProvider, cluster: str, count: int = 1) -> list[str]:
    """moto starts no instances for a node group: start what EKS would, tagged like EKS
    tags managed-node-group instances, in the network stack's public subnet."""
    network = provider.describe_network()
    ec2 = moto.client("ec2")
    reply = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=count,
        MaxCount=count,
        # moto ignores the subnet's MapPublicIpOnLaunch; ask for the address explicitly.
        NetworkInterfaces=[
            {
                "DeviceIndex": 0,
                "SubnetId": network.public_subnets[0],
                "AssociatePublicIpAddress": True,
            }
        ],
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": EKS_NODE_CLUSTER_TAG, "Value": cluster}]}
        ],
    )
    return [instance["PublicIpAddress"] for instance in reply["Instances"]]


def fake_cluster_security_group(moto, provider: AwsProvider, cluster: str) -> str:
    """EKS makes eks-cluster-sg-<name> tagged aws:eks:cluster-name; moto does not."""
    ec2 = moto.client("ec2")
    return ec2.create_security_group(
        GroupName=f"eks-cluster-sg-{cluster}",
        Description=f"EKS created security group for {cluster}",
        VpcId=provider.describe_network().vpc_id,
        TagSpecifications=[
            {"ResourceType": "security-group", "Tags": [{"Key": EKS_CLUSTER_TAG, "Value": cluster}]}
        ],
    )["GroupId"]


def test_network_stack_is_created_once_then_reused(moto, provider) -> None:
    first = provider.ensure_network()
    second = provider.ensure_network()
    assert first.created and not second.created
    assert first.describe() | {"created_now": False} == second.describe()
    stacks = moto.client("cloudformation").describe_stacks()["Stacks"]
    assert [stack["StackName"] for stack in stacks] == ["meshbench-network"]
    tags = {tag["Key"]: tag["Value"] for tag in stacks[0]["Tags"]}
    assert tags[TAG_KEEP] == "true"

    ec2 = moto.client("ec2")
    vpc = ec2.describe_vpcs(VpcIds=[first.vpc_id])["Vpcs"][0]
    assert vpc["CidrBlock"] == "10.80.0.0/16"
    subnets = ec2.describe_subnets(SubnetIds=list(first.public_subnets))["Subnets"]
    assert sorted(subnet["CidrBlock"] for subnet in subnets) == ["10.80.0.0/18", "10.80.64.0/18"]
    assert len({subnet["AvailabilityZone"] for subnet in subnets}) == 2
    assert first.private_subnets == ()  # private subnets (and their NAT) are opt-in

    iam = moto.client("iam")
    for arn, principal in (
        (first.cluster_role_arn, "eks.amazonaws.com"),
        (first.node_role_arn, "ec2.amazonaws.com"),
    ):
        role = iam.get_role(RoleName=arn.rsplit("/", 1)[1])["Role"]
        statement = role["AssumeRolePolicyDocument"]["Statement"][0]
        assert statement["Principal"]["Service"] == principal


def test_network_template_lints_clean_and_grants_the_documented_policies() -> None:
    """moto does not attach managed policies, so the template itself is checked: cfn-lint
    (AWS's own linter, offline) finds nothing, and the roles carry what mesh-recipes.md
    section 4.2 lists."""
    from cfnlint.api import lint_file
    from cfnlint.decode import cfn_yaml

    assert lint_file(NETWORK_TEMPLATE) == []
    template = cfn_yaml.load(str(NETWORK_TEMPLATE))
    resources = template["Resources"]

    def policies(role: str) -> set[str]:
        return {
            item["Fn::Sub"].rsplit("/", 1)[1]
            for item in resources[role]["Properties"]["ManagedPolicyArns"]
        }

    assert policies("ClusterRole") == {"AmazonEKSClusterPolicy"}
    assert policies("NodeRole") == {
        "AmazonEKSWorkerNodePolicy",
        "AmazonEC2ContainerRegistryReadOnly",
        "AmazonEKS_CNI_Policy",
    }
    for name in ("PublicSubnet01", "PublicSubnet02"):
        properties = resources[name]["Properties"]
        assert properties["MapPublicIpOnLaunch"] is True
        assert {"Key": "kubernetes.io/role/elb", "Value": "1"} in properties["Tags"]
    for name in ("NatGateway", "NatAddress", "PrivateSubnet01", "PrivateSubnet02"):
        assert resources[name]["Condition"] == "CreatePrivateSubnets"


def test_clusters_and_node_groups_carry_the_configured_settings_and_tags(moto, provider) -> None:
    ctx = run_context(provider.config, "aws", "nsm")
    sent = captured_requests(provider, "CreateCluster")
    before = utcnow().replace(microsecond=0)
    result = provider.create(ctx)

    network = provider.describe_network()
    assert set(result["clusters"]) == {"client", "server"}
    assert len(sent) == 2  # both control planes requested before waiting for either
    for request in sent:
        assert request["accessConfig"] == {
            "authenticationMode": "API",
            "bootstrapClusterCreatorAdminPermissions": True,
        }
        assert "publicAccessCidrs" not in request["resourcesVpcConfig"]
    eks = moto.client("eks")
    for role in ("client", "server"):
        name = f"{ctx.resource_prefix}-{role}"
        cluster = eks.describe_cluster(name=name)["cluster"]
        assert cluster["version"] == "1.35"
        assert cluster["roleArn"] == network.cluster_role_arn
        assert cluster["resourcesVpcConfig"]["subnetIds"] == list(network.public_subnets)
        tags = cluster["tags"]
        assert tags[TAG_SLUG] == ctx.slug
        assert tags[TAG_DAG_ID] == "meshbench_aws_nsm"
        assert tags[TAG_RUN_ID] == ctx.run_id
        assert parse_timestamp(tags[TAG_CREATED_AT]) >= before

        group = eks.describe_nodegroup(clusterName=name, nodegroupName=f"{name}-nodes")["nodegroup"]
        assert group["instanceTypes"] == ["m5.2xlarge"]
        assert group["amiType"] == "AL2023_x86_64_STANDARD"
        assert group["capacityType"] == "ON_DEMAND"
        assert group["scalingConfig"] == {"minSize": 1, "maxSize": 1, "desiredSize": 1}
        assert group["diskSize"] == 50
        assert group["version"] == "1.35"
        assert group["nodeRole"] == network.node_role_arn
        assert group["subnets"] == list(network.public_subnets)  # NSM needs public nodes
        assert group["labels"] == {"meshbench.io/role": role}
        assert group["tags"][TAG_SLUG] == ctx.slug
        assert group["tags"][f"kubernetes.io/cluster/{name}"] == "owned"


def test_node_count_and_instance_type_come_from_config(moto, aws_config) -> None:
    config = with_environment(aws_config, "aws", instance_type="c5.4xlarge", node_count=3)
    provider = AwsProvider(config)
    ctx = run_context(config, "aws")
    provider.create(ctx)
    group = moto.client("eks").describe_nodegroup(
        clusterName=f"{ctx.resource_prefix}-server",
        nodegroupName=f"{ctx.resource_prefix}-server-nodes",
    )["nodegroup"]
    assert group["instanceTypes"] == ["c5.4xlarge"]
    assert group["scalingConfig"]["desiredSize"] == 3


def test_a_retried_create_adopts_what_the_first_try_made(moto, provider) -> None:
    ctx = run_context(provider.config, "aws")
    network = provider.ensure_network()
    # The first try got as far as requesting the client cluster, then died.
    client_request = provider.cluster_request(ctx, "client", network, utcnow() - timedelta(1))
    provider.eks_hook.create_cluster(**client_request)

    sent = captured_requests(provider, "CreateCluster")
    result = provider.create(ctx)
    assert result["clusters"]["client"]["adopted"] is True
    assert result["clusters"]["server"]["adopted"] is False
    assert [request["name"] for request in sent] == [f"{ctx.resource_prefix}-server"]
    # The adopted cluster keeps the creation time of the try that made it.
    assert result["clusters"]["client"]["created_at"] == client_request["tags"][TAG_CREATED_AT]

    again = provider.create(ctx)
    assert all(cluster["adopted"] for cluster in again["clusters"].values())
    eks = moto.client("eks")
    assert sorted(eks.list_clusters()["clusters"]) == sorted(provider.cluster_names(ctx).values())
    for name in provider.cluster_names(ctx).values():
        assert eks.list_nodegroups(clusterName=name)["nodegroups"] == [f"{name}-nodes"]
    assert not again["network"]["created_now"]


def test_create_refuses_a_same_named_cluster_of_another_run(moto, provider) -> None:
    ctx = run_context(provider.config, "aws")
    network = provider.ensure_network()
    request = provider.cluster_request(ctx, "client", network, utcnow())
    request["tags"][TAG_SLUG] = "someone"
    provider.eks_hook.create_cluster(**request)
    with pytest.raises(StepFailed, match="not this run's"):
        provider.create(ctx)


def test_delete_removes_both_clusters_keeps_the_network_and_reports_minutes(moto, provider) -> None:
    ctx = run_context(provider.config, "aws")
    provider.create(ctx)
    used = provider.delete(ctx)

    eks = moto.client("eks")
    assert eks.list_clusters()["clusters"] == []
    assert used["deleted"] == {name: "deleted" for name in provider.cluster_names(ctx).values()}
    assert used["complete"] is True
    assert used["cluster_minutes"] > 0 and used["node_minutes"] > 0
    assert set(used["clusters"]) == {"client", "server"}
    stacks = moto.client("cloudformation").describe_stacks()["Stacks"]
    assert [stack["StackStatus"] for stack in stacks] == ["CREATE_COMPLETE"]

    # A retried delete finds nothing and does not fail.
    again = provider.delete(ctx)
    assert again["deleted"] == {
        name: "already gone" for name in provider.cluster_names(ctx).values()
    }
    assert again["complete"] is False and again["cluster_minutes"] == 0


def _elb(moto, name: str, cluster: str, subnet: str) -> None:
    moto.client("elb").create_load_balancer(
        LoadBalancerName=name,
        Listeners=[{"Protocol": "TCP", "LoadBalancerPort": 80, "InstancePort": 30080}],
        Subnets=[subnet],
        Tags=[{"Key": f"kubernetes.io/cluster/{cluster}", "Value": "owned"}],
    )


def test_delete_waits_for_the_mesh_load_balancers_before_deleting_clusters(
    moto, aws_config
) -> None:
    provider = AwsProvider(with_environment(aws_config, "aws", load_balancer_wait=20.0))
    ctx = run_context(provider.config, "aws")
    provider.create(ctx)
    subnet = provider.describe_network().public_subnets[0]
    client = f"{ctx.resource_prefix}-client"
    _elb(moto, "a1b2c3", client, subnet)
    _elb(moto, "unrelated", "someone-elses-cluster", subnet)

    listed = threading.Event()
    list_balancers = provider.load_balancers

    def load_balancers(clusters=None):
        found = list_balancers(clusters)
        listed.set()
        return found

    provider.load_balancers = load_balancers

    def controller_removes_it() -> None:  # what the in-tree controller does after uninstall
        listed.wait(timeout=30)
        time.sleep(1.5)
        moto.client("elb").delete_load_balancer(LoadBalancerName="a1b2c3")

    remover = threading.Thread(target=controller_removes_it)
    remover.start()
    started = time.monotonic()
    used = provider.delete(ctx)
    remover.join()
    assert time.monotonic() - started >= 1.5
    assert used["load_balancers"] == {"waited_for": 1, "force_deleted": []}
    names = [
        item["LoadBalancerName"]
        for item in moto.client("elb").describe_load_balancers()["LoadBalancerDescriptions"]
    ]
    assert names == ["unrelated"]


def test_delete_removes_load_balancers_that_outlive_the_wait(moto, provider) -> None:
    ctx = run_context(provider.config, "aws")
    provider.create(ctx)
    subnet = provider.describe_network().public_subnets[0]
    _elb(moto, "stuck", f"{ctx.resource_prefix}-server", subnet)
    used = provider.delete(ctx)
    assert used["load_balancers"] == {"waited_for": 1, "force_deleted": ["stuck"]}
    assert moto.client("elb").describe_load_balancers()["LoadBalancerDescriptions"] == []
    assert moto.client("eks").list_clusters()["clusters"] == []


def test_nsm_opens_wireguard_only_from_the_other_clusters_nodes(moto, provider) -> None:
    ctx = run_context(provider.config, "aws", "nsm")
    provider.create(ctx)
    names = provider.cluster_names(ctx)
    addresses = {role: fake_nodes(moto, provider, name) for role, name in names.items()}
    groups = {
        role: fake_cluster_security_group(moto, provider, name) for role, name in names.items()
    }

    opened = provider.open_security_groups(ctx)
    provider.open_security_groups(ctx)  # a retry: duplicates are fine

    ec2 = moto.client("ec2")
    for role, peer in (("client", "server"), ("server", "client")):
        permissions = ec2.describe_security_groups(GroupIds=[groups[role]])["SecurityGroups"][0][
            "IpPermissions"
        ]
        assert [(p["IpProtocol"], p["FromPort"], p["ToPort"]) for p in permissions] == [
            ("udp", 51820, 51820)
        ]
        sources = [item["CidrIp"] for item in permissions[0]["IpRanges"]]
        assert sources == [f"{address}/32" for address in addresses[peer]]
        assert all(ipaddress.ip_network(source).prefixlen == 32 for source in sources)
        assert opened["rules"][role]["sources"] == sources


def test_baseline_opens_no_node_ports_and_limits_its_load_balancer_to_the_peer(
    moto, provider
) -> None:
    ctx = run_context(provider.config, "aws", "baseline")
    provider.create(ctx)
    names = provider.cluster_names(ctx)
    client_addresses = fake_nodes(moto, provider, names["client"], count=2)
    group = fake_cluster_security_group(moto, provider, names["server"])
    assert provider.open_security_groups(ctx) == {"rules": {}}
    permissions = moto.client("ec2").describe_security_groups(GroupIds=[group])["SecurityGroups"][
        0
    ]["IpPermissions"]
    assert permissions == []
    ranges = provider.load_balancer_source_ranges(ctx, "server")
    assert ranges == sorted(f"{address}/32" for address in client_addresses)
    with provider.planning():
        placeholder = provider.load_balancer_source_ranges(ctx, "server")
    assert placeholder == [f"<public IPv4 of each node of {names['client']}>/32"]


def test_a_load_balancer_both_clusters_use_admits_both_and_only_them(moto, provider) -> None:
    """Kuma's global KDS in the server cluster is reached by both zones' control planes."""
    ctx = run_context(provider.config, "aws", "kuma")
    provider.create(ctx)
    names = provider.cluster_names(ctx)
    addresses = {role: fake_nodes(moto, provider, names[role]) for role in ("client", "server")}
    ranges = provider.load_balancer_source_ranges(ctx, "server", ("client", "server"))
    assert ranges == [f"{a}/32" for a in sorted(addresses["client"])] + [
        f"{a}/32" for a in sorted(addresses["server"])
    ]
    assert provider.load_balancer_source_ranges(ctx, "server") == [
        f"{a}/32" for a in sorted(addresses["client"])
    ]
    with provider.planning():
        placeholders = provider.load_balancer_source_ranges(ctx, "server", ("client", "server"))
    assert placeholders == [
        f"<public IPv4 of each node of {names['client']}>/32",
        f"<public IPv4 of each node of {names['server']}>/32",
    ]


def test_nsm_needs_the_peer_nodes_to_exist(moto, provider) -> None:
    ctx = run_context(provider.config, "aws", "nsm")
    provider.create(ctx)
    fake_cluster_security_group(moto, provider, provider.cluster_name(ctx, "client"))
    # No instances for the server cluster: there is nothing to open the port to.
    with pytest.raises(StepFailed, match="no running nodes"):
        provider.open_security_groups(ctx)


def test_kubeconfig_comes_from_eks_hook_and_disappears_after_the_task(moto, provider) -> None:
    ctx = run_context(provider.config, "aws")
    provider.create(ctx)
    access = provider.access(ctx, "client")
    assert isinstance(access, EksClusterAccess)
    endpoint = moto.client("eks").describe_cluster(name=access.cluster_name)["cluster"]["endpoint"]
    with access.open() as path:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
        document = yaml.safe_load(text)
        assert document["clusters"][0]["cluster"]["server"] == endpoint
        assert document["users"][0]["user"]["exec"]["command"] == "sh"
        assert AWS_SECRET not in text  # the exec plugin reads a separate credentials file
        credentials = [
            part
            for part in document["users"][0]["user"]["exec"]["args"][1].split()
            if part.endswith(".aws_creds")
        ]
        assert credentials and all(os.path.exists(item) for item in credentials)
    assert not os.path.exists(path)
    assert not any(os.path.exists(item) for item in credentials)
    assert AWS_SECRET not in str(access.describe())


def test_created_at_tags_are_valid_aws_tag_values(moto, provider) -> None:
    ctx = run_context(provider.config, "aws", run_id="manual__2026-11-26T07:00:00.123456+00:00")
    tags = provider.resource_tags(ctx, "client", utcnow())
    assert tags[TAG_CREATED_AT] == isoformat(parse_timestamp(tags[TAG_CREATED_AT]))
    for value in tags.values():
        assert len(value) <= 256
        assert all(ch.isalnum() or ch in " +-=._:/@" for ch in value), value


def test_extra_admin_principals_get_access_entries(aws_config) -> None:
    """moto has no access-entry API: botocore's Stubber checks the requests against the
    EKS service model instead (no endpoint is contacted)."""
    import boto3
    from botocore.stub import Stubber

    principal = "arn:aws:iam::123456789012:role/meshbench-airflow-workers"
    config = with_environment(aws_config, "aws", admin_principal_arns=[principal])
    provider = AwsProvider(config)
    client = boto3.client(
        "eks",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key=AWS_SECRET,
    )
    provider.__dict__["eks"] = client  # the cached client the provider uses
    ctx = run_context(config, "aws")
    with Stubber(client) as stub:
        for name in provider.cluster_names(ctx).values():
            stub.add_response(
                "create_access_entry",
                {"accessEntry": {"clusterName": name, "principalArn": principal}},
                {"clusterName": name, "principalArn": principal},
            )
            stub.add_response(
                "associate_access_policy",
                {"clusterName": name, "principalArn": principal},
                {
                    "clusterName": name,
                    "principalArn": principal,
                    "policyArn": "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy",
                    "accessScope": {"type": "cluster"},
                },
            )
        provider.grant_admins(ctx)
        stub.assert_no_pending_responses()
