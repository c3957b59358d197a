#!/usr/bin/env python3
"""`make stack-test`: the stack `make deploy` creates, stood up in moto, and the bridge and redrive
functions `sam build` made run with what the stack gives them (the reconcile function too: its
schedule is checked in the translated template, its queue of shops run end to end).

1. template.yaml → plain CloudFormation by the SAM translator the SAM CLI ships; the functions'
   CodeUri → a placeholder zip in moto's S3; the stack created in moto's CloudFormation (all but
   the dashboard, which moto cannot create: checked from the translated template instead).
2. Everything below is read back from the stack through the APIs: outputs (DescribeStacks),
   function configurations (GetFunctionConfiguration: environment, handler, role, logging),
   roles' policies (GetRolePolicy), the event source mapping, the queues' attributes, the table.
3. Each function's `bootstrap` (the arm64 build, under qemu-user here) runs with exactly the
   environment Lambda gives it, plus the endpoint overrides, and credentials from sts:AssumeRole
   on its role; moto's IAM enforcement is switched on after set-up. Their AWS calls go through
   recording proxies; what AWS itself does with a function's role (the SQS event source mapping's
   polling, log delivery) is done by this script with that role's credentials, through a proxy
   too, and each such grant is in AWS_USES with its reason.
4. The paths: webhook → claim → RedTrack → recorded; duplicate; a named shop put with the admin
   CLI and served on /cartpanda/{store}; RedTrack down → the stack's queue → the redrive function
   (fed the SQS event built from the message) → sent once; RedTrack refusing → the stack's DLQ;
   `make redrive` moving it back; the queue unavailable → the claim released; a retry delayed;
   reconciliation: a named shop put with `--reconcile` → the schedule's invocation queues it on the
   stack's queue of shops → the reconcile function (fed the SQS event of that message) lists its
   orders from a stand-in of Cartpanda's order list → the missing conversion sent to RedTrack, one
   that RedTrack refuses for now queued for redrive; the next run sends nothing.
5. Least privilege: every recorded call is matched against its role's Allow statements (action
   and resource; moto checks actions only), every grant must be used by a path or by AWS, and
   the table is printed.

Usage: stack_test.py --build-dir .aws-sam/build [--moto-port 5056]
"""

import argparse
import ast
import copy
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import boto3  # noqa: E402
import botocore.config  # noqa: E402
from standin import (  # noqa: E402
    ACCOUNT, REGION, ROOT, Failure, Function, Moto, OrderList, RecordingProxy, RedTrack, RuntimeApi, check,
    command_for, is_arm64, lambda_environment, outcome, qemu_env, queue_arn, webhook_event,
)

STACK = "cartpanda-redtrack-stack-test"
TOKEN = "stack-test-token-0123456789"
STORE = "shop-one"
STORE_TOKEN = "store-token-abcdefghijkl"
FUNCTIONS = ("BridgeFunction", "RedriveFunction", "ReconcileFunction")
RECONCILED = "shop-two"
RECONCILED_API_TOKEN = "cp-api-token-shop-two"
BOTO = botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=60)

# What AWS does with a function's role on the function's behalf: (function, action) → reason.
# This script performs exactly these calls, with the role's credentials, where AWS would.
AWS_USES = {
    ("RedriveFunction", "sqs:ReceiveMessage"):
        "the SQS event source mapping polls the redrive queue with the function's role",
    ("RedriveFunction", "sqs:DeleteMessage"):
        "the event source mapping deletes each message the function did not report as failed",
    ("RedriveFunction", "sqs:GetQueueAttributes"):
        "the event source mapping reads the queue's attributes when it is created and enabled",
    ("BridgeFunction", "logs:CreateLogStream"):
        "Lambda creates each execution environment's log stream in the function's log group",
    ("BridgeFunction", "logs:PutLogEvents"): "Lambda delivers the function's stdout to its log stream",
    ("RedriveFunction", "logs:CreateLogStream"):
        "Lambda creates each execution environment's log stream in the function's log group",
    ("RedriveFunction", "logs:PutLogEvents"): "Lambda delivers the function's stdout to its log stream",
    ("ReconcileFunction", "sqs:ReceiveMessage"):
        "the SQS event source mapping polls the queue of shops with the function's role",
    ("ReconcileFunction", "sqs:DeleteMessage"):
        "the event source mapping deletes each message the function did not report as failed",
    ("ReconcileFunction", "sqs:GetQueueAttributes"):
        "the event source mapping reads the queue's attributes when it is created and enabled",
    ("ReconcileFunction", "logs:CreateLogStream"):
        "Lambda creates each execution environment's log stream in the function's log group",
    ("ReconcileFunction", "logs:PutLogEvents"): "Lambda delivers the function's stdout to its log stream",
}


def say(text):
    print(f"stack-test: {text}", flush=True)


class PlaceholderLoader:
    """The managed-policy loader samtranslator asks for (no role here needs one)."""

    def load(self):
        return {}


def translate(bucket, key, parameters):
    from samcli.yamlhelper import yaml_parse
    from samtranslator.translator.transform import transform

    with open(os.path.join(ROOT, "template.yaml")) as f:
        sam = yaml_parse(f.read())
    for name, res in sam["Resources"].items():
        if res["Type"] == "AWS::Serverless::Function":
            res["Properties"]["CodeUri"] = f"s3://{bucket}/{key}"
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    values = dict(parameters)
    values.update({
        "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws",
        "AWS::StackName": STACK, "AWS::URLSuffix": "amazonaws.com",
        "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{STACK}/x",
        "AWS::NotificationARNs": [],
    })
    return json.loads(json.dumps(transform(sam, values, PlaceholderLoader())))


# -------------------------------------------------------------------------------------------------
# The dashboard, which moto cannot create


def check_dashboard(cfn):
    dashboards = {k: v for k, v in cfn["Resources"].items() if v["Type"] == "AWS::CloudWatch::Dashboard"}
    check(len(dashboards) == 1, f"expected one dashboard in the translated template, got {list(dashboards)}")
    (name, dashboard), = dashboards.items()
    body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    check(isinstance(body, str), "DashboardBody must be a plain Fn::Sub string")
    refs = re.findall(r"\$\{([^}]+)\}", body)
    pseudo = {"AWS::Region", "AWS::StackName", "AWS::AccountId", "AWS::URLSuffix", "AWS::Partition"}
    for ref in refs:
        resource = ref.split(".")[0]
        check(ref in pseudo or resource in cfn["Resources"],
              f"dashboard: ${{{ref}}} names no resource of the stack")
        if ref.endswith(".Arn") and "Alarm" in resource:
            check(cfn["Resources"][resource]["Type"] == "AWS::CloudWatch::Alarm",
                  f"dashboard: {resource} is not an alarm")
    alarms = [k for k, v in cfn["Resources"].items() if v["Type"] == "AWS::CloudWatch::Alarm"]
    missing = [a for a in alarms if f"${{{a}.Arn}}" not in body]
    check(not missing, f"dashboard: alarms not on the alarm widget: {missing}")
    doc = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))
    check(len(doc["widgets"]) >= 1, "dashboard without widgets")
    named = check_metric_names(cfn, doc)
    say(f"moto cannot create AWS::CloudWatch::Dashboard ({name}: its Fn::Sub of alarm ARNs is "
        f"rejected); checked from the translated template instead: {len(doc['widgets'])} widgets, "
        f"valid JSON, {len(refs)} substitutions all naming the stack's resources, every alarm shown, "
        f"{named} metrics of the namespace named, each one a function emits")
    del cfn["Resources"][name]


# The alarms issue 23 added, with the metric each watches and how.
NEW_ALARMS = {
    "OrdersUncoveredAlarm": ("OrdersUncovered", "Sum", 86400, "GreaterThanThreshold"),
    "ShopsSilentAlarm": ("ShopsSilent", "Maximum", 3600, "GreaterThanOrEqualToThreshold"),
}


def emitted_metrics():
    """The metric names the functions emit: src/ops/metrics.rs's EMITTED list (which
    tests/metric_names.rs checks against the lines the code builds)."""
    with open(os.path.join(ROOT, "src", "ops", "metrics.rs")) as f:
        text = f.read()
    block = re.search(r"pub const EMITTED: &\[&str\] = &\[(.*?)\];", text, re.S)
    check(block is not None, "src/ops/metrics.rs has no EMITTED list")
    names = set(re.findall(r'"([A-Za-z0-9]+)"', block.group(1)))
    check(len(names) >= 10, f"EMITTED reads as {sorted(names)}")
    return names


def check_metric_names(cfn, doc):
    """Every metric of the namespace a dashboard widget or an alarm names is one a function
    emits; the new alarms exist and watch their metric. Returns how many widget metrics were
    checked."""
    emitted = emitted_metrics()
    seen = 0
    for widget in doc["widgets"]:
        for metric in widget.get("properties", {}).get("metrics", []):
            strings = [m for m in metric if isinstance(m, str)]
            check(strings[:1] != ["."] and strings[:1] != ["..."],
                  f"dashboard: write the namespace and name of every metric out: {metric}")
            if strings and strings[0] == "CartpandaRedTrack":
                seen += 1
                check(strings[1] in emitted,
                      f"dashboard widget {widget['properties'].get('title')!r} names {strings[1]}, "
                      f"which no function emits (src/ops/metrics.rs EMITTED)")
    for name, res in cfn["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::CloudWatch::Alarm" and props.get("Namespace") == "CartpandaRedTrack":
            check(props.get("MetricName") in emitted,
                  f"alarm {name} watches {props.get('MetricName')}, which no function emits")
    for alarm, (metric, statistic, period, operator) in NEW_ALARMS.items():
        props = cfn["Resources"].get(alarm, {}).get("Properties")
        check(props is not None, f"the stack has no {alarm}")
        got = (props.get("MetricName"), props.get("Statistic"), props.get("Period"),
               props.get("ComparisonOperator"))
        check(got == (metric, statistic, period, operator), f"{alarm}: {got}")
    return seen


def refs(value):
    """The logical IDs a template value refers to (Ref, Fn::GetAtt, ${X} in Fn::Sub)."""
    if isinstance(value, dict):
        if "Ref" in value:
            return {value["Ref"]}
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            return {target[0] if isinstance(target, list) else target.split(".")[0]}
        if "Fn::Sub" in value:
            text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
            return {r.split(".")[0] for r in re.findall(r"\$\{([^}!]+)\}", text) if not r.startswith("AWS::")}
        return set().union(*(refs(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(refs(v) for v in value)) if value else set()
    return set()


def check_absent(cfn, absent, created):
    """Resources moto's CloudFormation does not create (it skips them silently): each is named and
    checked from the translated template; a type without a check here fails the test."""
    with open(os.path.join(ROOT, "src", "ops", "metrics.rs")) as f:
        namespace = re.search(r'pub const NAMESPACE: &str = "([^"]+)";', f.read()).group(1)
    sources = ""
    for folder, _, files in os.walk(os.path.join(ROOT, "src")):
        for file in files:
            if file.endswith(".rs"):
                with open(os.path.join(folder, file)) as f:
                    sources += f.read()
    for name, res in absent.items():
        kind, props = res["Type"], res["Properties"]
        if kind == "AWS::CloudWatch::Alarm":
            dims = {d["Name"]: d["Value"] for d in props.get("Dimensions", [])}
            for target in refs(props.get("Dimensions", [])) | refs(props.get("AlarmActions", [])):
                # The HTTP API is one of the resources moto skips; it is checked from the template
                # here too (below), so an alarm may watch it.
                check(target in created or target in absent,
                      f"alarm {name} refers to {target}, which the stack neither created nor checked")
            check(refs(props.get("AlarmActions", [])) == {"AlarmTopic"}, f"alarm {name} does not notify AlarmTopic")
            if props["Namespace"].startswith("AWS/"):
                check(refs(props.get("Dimensions", [])), f"alarm {name} watches no resource of the stack")
            else:
                check(props["Namespace"] == namespace, f"alarm {name}: namespace {props['Namespace']} != {namespace}")
                for value in [props["MetricName"], *dims.values()]:
                    check(f'"{value}"' in sources, f"alarm {name}: \"{value}\" is written nowhere in src/")
            how = f"{props['Namespace']} {props['MetricName']} {dims}"
        elif kind == "AWS::ApiGatewayV2::Api":
            body = props["Body"]
            for path, methods in body["paths"].items():
                for method, op in methods.items():
                    check(refs(op["x-amazon-apigateway-integration"]["uri"]) == {"BridgeFunction"},
                          f"route {method.upper()} {path} is not integrated with BridgeFunction")
            how = f"{sum(len(m) for m in body['paths'].values())} routes, each integrated with BridgeFunction"
        elif kind == "AWS::ApiGatewayV2::Stage":
            check(props.get("StageName") == "$default" and props.get("AutoDeploy") is True and refs(props["ApiId"]) == {"HttpApi"},
                  f"stage {name}: {props.get('StageName')}, AutoDeploy {props.get('AutoDeploy')}")
            routes = props.get("DefaultRouteSettings", {})
            for key, parameter in (("ThrottlingRateLimit", "ApiRateLimit"), ("ThrottlingBurstLimit", "ApiBurstLimit")):
                value = routes.get(key)
                default = cfn.get("Parameters", {}).get(parameter, {}).get("Default")
                check(refs(value) == {parameter} or (default is not None and str(value) == str(default)),
                      f"stage {name}: {key} is {value!r}, not the {parameter} parameter")
            how = "$default, auto-deployed, of HttpApi, throttled by ApiRateLimit and ApiBurstLimit"
        elif kind == "AWS::Scheduler::Schedule":
            target = props["Target"]
            check(refs(target["Arn"]) == {"ReconcileFunction"}, f"schedule {name} does not invoke ReconcileFunction")
            check(refs(props["ScheduleExpression"]) == {"ReconcileSchedule"},
                  f"schedule {name} does not follow the ReconcileSchedule parameter")
            check(refs(target["RoleArn"]) <= created, f"schedule {name}'s role was not created")
            how = "invokes ReconcileFunction on ReconcileSchedule, with a role the stack created"
        else:
            raise Failure(f"moto did not create {name} ({kind}) and this test has no check of it: add one")
        say(f"moto does not create {name} ({kind}); checked from the translated template: {how}")


# -------------------------------------------------------------------------------------------------
# Policies


def as_list(v):
    return v if isinstance(v, list) else [v]


def wildcard(pattern, ignore_case):
    regex = "^" + re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".") + "$"
    return re.compile(regex, re.IGNORECASE if ignore_case else 0)


def grants_of(role_name, documents):
    """[(policy, sid, action pattern, resource pattern)] of a role's Allow statements. Anything
    this small evaluator does not model (Deny, NotAction, NotResource, Condition) fails the test
    rather than being ignored."""
    grants = []
    for policy, doc in documents:
        for i, st in enumerate(as_list(doc["Statement"])):
            unsupported = {"NotAction", "NotResource", "Condition", "NotPrincipal"} & set(st)
            check(st.get("Effect") == "Allow" and not unsupported,
                  f"{role_name}/{policy}: statement {st.get('Sid', i)} uses {st.get('Effect')} "
                  f"{sorted(unsupported)}: extend the evaluator in scripts/stack_test.py")
            for action in as_list(st["Action"]):
                for resource in as_list(st["Resource"]):
                    grants.append((policy, st.get("Sid", str(i)), action, resource))
    return grants


def policy_document(doc):
    """A policy document as IAM returns it: a dict, URL-encoded JSON, or (moto, for a role made by
    CloudFormation) the Python representation of the template's dict."""
    if isinstance(doc, dict):
        return doc
    text = urllib.parse.unquote(doc)
    try:
        return json.loads(text)
    except ValueError:
        return ast.literal_eval(text)


def role_documents(iam, role_name):
    docs = []
    for name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
        doc = iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
        docs.append((name, policy_document(doc)))
    for attached in iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]:
        arn = attached["PolicyArn"]
        version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
        doc = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
        docs.append((attached["PolicyName"], policy_document(doc)))
    return docs


def describe_uses(uses):
    """"who: phase" pairs → "who (phase; phase) | who (phase)"."""
    by_who = {}
    for use in sorted(uses):
        who, _, phase = use.partition(": ")
        by_who.setdefault(who, []).append(phase)
    return " | ".join(f"{who} ({'; '.join(phases)})" for who, phases in by_who.items())


# Grants on paths this test does not drive, each with the test that does and why it is needed.
UNDRIVEN = {
    ("BridgeFunction", "ssm:GetParameter"):
        "reads secrets given as SSM parameters (WebhookTokenParameter, CartpandaApiTokenParameter, "
        "shops' Cartpanda API tokens); this stack gives its secrets as values; tests/secrets.rs "
        "drives the path against moto's SSM",
    ("ReconcileFunction", "dynamodb:DeleteItem"):
        "releases a claim whose conversion neither RedTrack nor the redrive queue took (the bridge's "
        "own path, which reconciliation sends through); tests/reliability.rs "
        "an_unreachable_queue_releases_the_claim_and_answers_502 drives it against moto",
    ("ReconcileFunction", "dynamodb:BatchGetItem"):
        "the daily coverage pass reads the ledger records of the day's paid orders (a day with "
        "paid orders in the list, which this stack's stand-in does not serve); tests/coverage.rs "
        "coverage_of_a_mixed_day_equals_the_list_s_truth drives it against moto",
    ("ReconcileFunction", "dynamodb:Query"):
        "RedTrack's daily count reads the day's sent conversions from the sent-day index (only "
        "with a RedTrack API key, which this stack does not give); tests/redtrack_count.rs "
        "the_daily_count_finds_a_conversion_missing_and_one_doubled drives it against moto",
}


def least_privilege(functions, calls):
    """Matches the recorded calls against the roles' grants; prints the table; returns the
    problems (missing and unexplained grants, denied calls)."""
    problems = []
    rows = []
    for fn, info in functions.items():
        grants = info["grants"]
        used = {g: set() for g in grants}
        for label, action, resource, status, body, phase in calls:
            if info["labels"].get(label) is None:
                continue
            who = info["labels"][label]
            if who.startswith("AWS") and (fn, action) not in AWS_USES:
                problems.append(f"{fn}: the AWS stand-in made {action}, which AWS_USES does not explain")
            if status == 403 or b"AccessDenied" in body:
                problems.append(f"{fn}: moto denied {action} on {resource} ({phase}): the role lacks the action")
            matching = [g for g in grants if wildcard(g[2], True).match(action) and wildcard(g[3], False).match(resource)]
            if not matching:
                problems.append(f"{fn}: {action} on {resource} ({who}, {phase}) is allowed by no statement of "
                                f"{info['role']}: missing grant")
                rows.append((info["role"], action, resource, f"MISSING: {who}: {phase}"))
            for g in matching:
                used[g].add(f"{who}: {phase}")
        for g in grants:
            _, sid, action, resource = g
            if resource == "*" or action.endswith("*"):
                problems.append(f"{fn}: {info['role']} grants {action} on {resource}: broader than any call")
            if not used[g] and (fn, action) in UNDRIVEN:
                rows.append((info["role"], action, resource, "not driven here: " + UNDRIVEN[(fn, action)]))
                continue
            if not used[g]:
                problems.append(f"{fn}: {info['role']} grants {action} on {resource} (statement {sid}), "
                                f"used by no path and not by AWS (AWS_USES): unexplained grant")
            rows.append((info["role"], action, resource, describe_uses(used[g]) if used[g] else "UNUSED"))
        for (f, action), reason in AWS_USES.items():
            if f == fn and not any(c[1] == action and info["labels"].get(c[0], "").startswith("AWS") for c in calls):
                problems.append(f"{fn}: AWS_USES lists {action} ({reason}) but no such call was made")
    print("\nleast privilege: every call each function's role made (and AWS made with it), against the "
          "role's statements\n")
    short = lambda r: re.sub(r"arn:aws:(\w+):us-east-1:123456789012:", r"\1:", r)  # noqa: E731
    widths = [max(len(short(str(r[i]))) for r in rows + [("role", "action", "resource", "")]) for i in range(3)]
    print(f"  {'role':<{widths[0]}}  {'action':<{widths[1]}}  {'resource':<{widths[2]}}  used by")
    for role, action, resource, used_by in rows:
        print(f"  {role:<{widths[0]}}  {action:<{widths[1]}}  {short(resource):<{widths[2]}}  {used_by}")
    print(f"\n  (resources shortened: service:… = arn:aws:service:{REGION}:{ACCOUNT}:…)")
    for (fn, action), reason in AWS_USES.items():
        print(f"  AWS on {fn}'s behalf: {action}: {reason}")
    print()
    return problems


# -------------------------------------------------------------------------------------------------
# The test


class Stack:
    def __init__(self, args):
        self.args = args
        self.admin = args.admin
        check(os.path.exists(self.admin), f"{self.admin} is missing: `cargo build --bin cartpanda-redtrack-admin`")
        self.calls = []
        self.phase = "set-up"
        self.cleanup = []

    def client(self, service, creds=None, endpoint=None):
        creds = creds or self.operator
        return boto3.client(service, region_name=REGION, endpoint_url=endpoint or self.moto.url, config=BOTO,
                            aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                            aws_session_token=creds.get("SessionToken"))

    def proxy(self, label):
        p = RecordingProxy(self.moto.port, label, self)
        self.cleanup.append(p)
        return p

    # Called by the proxies (a list with the phase added).
    def append(self, call):
        self.calls.append(call + (self.phase,))

    def run(self):
        started = time.time()
        self.moto = Moto(self.args.moto_port)
        self.cleanup.append(self.moto)
        self.redtrack = RedTrack()
        self.cleanup.append(self.redtrack)
        self.cartpanda = OrderList(RECONCILED_API_TOKEN)
        self.cleanup.append(self.cartpanda)
        self.operator = {"AccessKeyId": "test", "SecretAccessKey": "test"}
        self.deploy()
        self.read_back()
        self.credentials()
        self.start_functions()
        try:
            self.paths()
            self.reconcile()
            self.log_delivery()
        except Failure as failure:
            # The calls made so far still say which grant a failing path lacked.
            problems = least_privilege(self.functions, self.calls)
            raise Failure(f"{failure}" + ("\nleast privilege so far:\n  " + "\n  ".join(problems) if problems else ""))
        problems = least_privilege(self.functions, self.calls)
        check(not problems, "least privilege:\n  " + "\n  ".join(problems))
        say(f"passed in {time.time() - started:.0f} s")

    # --- 1. the stack ---------------------------------------------------------------------------

    def deploy(self):
        bucket, key = "stack-test-artifacts", "placeholder.zip"
        s3 = self.client("s3")
        s3.create_bucket(Bucket=bucket)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("bootstrap", "#!/bin/sh\n# placeholder: the functions run from .aws-sam/build\n")
        s3.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
        self.parameters = {
            "WebhookToken": TOKEN,
            "RedTrackPostbackUrl": self.redtrack.base + "/postback?clickid={cid}&sum={total_price}&email={email}",
            # Not the default, so that reading it back shows the parameter reaches the function.
            "ReconcileS2S": "true",
            "ReconcileConcurrency": "3",
        }
        self.cfn_template = translate(bucket, key, self.parameters)
        check_dashboard(self.cfn_template)
        cfn = self.client("cloudformation")
        cfn.create_stack(StackName=STACK, TemplateBody=json.dumps(self.cfn_template),
                         Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in self.parameters.items()],
                         Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"])
        until = time.time() + 120
        while True:
            stack = cfn.describe_stacks(StackName=STACK)["Stacks"][0]
            if not stack["StackStatus"].endswith("IN_PROGRESS") or time.time() > until:
                break
            time.sleep(0.5)
        if stack["StackStatus"] != "CREATE_COMPLETE":
            events = cfn.describe_stack_events(StackName=STACK)["StackEvents"]
            reasons = [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason')}" for e in events
                       if e.get("ResourceStatusReason")]
            raise Failure(f"stack {stack['StackStatus']}:\n  " + "\n  ".join(reasons[:20]))
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        self.resources = {r["LogicalResourceId"]: r for r in
                          cfn.list_stack_resources(StackName=STACK)["StackResourceSummaries"]}
        created = len(self.resources)
        wanted = {k for k, r in self.cfn_template["Resources"].items() if not r.get("Condition")}
        self.absent = {k: self.cfn_template["Resources"][k] for k in sorted(wanted - set(self.resources))}
        check_absent(self.cfn_template, self.absent, set(self.resources))
        say(f"stack CREATE_COMPLETE in moto: {created} resources, {len(self.outputs)} outputs")

    # --- 2. read back ----------------------------------------------------------------------------

    def read_back(self):
        lam, iam, sqs = self.client("lambda"), self.client("iam"), self.client("sqs")
        ddb, logs = self.client("dynamodb"), self.client("logs")
        self.functions = {}
        for logical in FUNCTIONS:
            name = self.resources[logical]["PhysicalResourceId"]
            config = lam.get_function_configuration(FunctionName=name)
            self.fill_dropped(logical, config)
            role = config["Role"].rsplit("/", 1)[-1]
            self.functions[logical] = {"name": name, "config": config, "role": role,
                                       "documents": role_documents(iam, role)}
            check(config["Runtime"] == "provided.al2023", f"{logical}: runtime {config['Runtime']}")
            check(config.get("Architectures") == ["arm64"], f"{logical}: architectures {config.get('Architectures')}")
            log_group = (config.get("LoggingConfig") or {}).get("LogGroup")
            groups = [g["logGroupName"] for g in logs.describe_log_groups(logGroupNamePrefix=log_group or "?")["logGroups"]]
            check(log_group in groups, f"{logical}: its log group {log_group} was not created by the stack")
        bridge_env = self.functions["BridgeFunction"]["config"]["Environment"]["Variables"]
        redrive_env = self.functions["RedriveFunction"]["config"]["Environment"]["Variables"]
        table = self.outputs["DedupTableName"]
        queue_url, dlq_url = self.outputs["RedriveQueueUrl"], self.outputs["RedriveDLQUrl"]
        # The environment names the stack's own resources.
        check(bridge_env["DEDUP_TABLE"] == redrive_env["DEDUP_TABLE"] == table == self.resources["DedupTable"]["PhysicalResourceId"],
              "DEDUP_TABLE differs between the functions, the output and the table")
        check(bridge_env["REDRIVE_QUEUE_URL"] == redrive_env["REDRIVE_QUEUE_URL"] == queue_url,
              "REDRIVE_QUEUE_URL differs between the functions and the output")
        check(redrive_env["REDRIVE_DLQ_URL"] == dlq_url, "REDRIVE_DLQ_URL is not the stack's DLQ")
        check(bridge_env["WEBHOOK_TOKEN"] == TOKEN, "WEBHOOK_TOKEN is not the WebhookToken parameter")
        # The table is what DynamoLedger (src/ledger/dynamo.rs) writes: key pk (S), TTL on expires_at.
        desc = ddb.describe_table(TableName=table)["Table"]
        check(desc["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}], f"table key {desc['KeySchema']}")
        check({"AttributeName": "pk", "AttributeType": "S"} in desc["AttributeDefinitions"], "pk is not a string")
        ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") == "DISABLED" and "AttributeName" not in ttl:
            ttl = self.cfn_template["Resources"]["DedupTable"]["Properties"]["TimeToLiveSpecification"]
            say(f"DedupTable: moto dropped TimeToLiveSpecification; checked in the translated template: {ttl}")
            ttl = {"AttributeName": ttl["AttributeName"], "TimeToLiveStatus": "ENABLED" if ttl["Enabled"] else "DISABLED"}
        with open(os.path.join(ROOT, "src", "ledger", "dynamo.rs")) as f:
            check('"expires_at"' in f.read(), "src/ledger/dynamo.rs no longer writes expires_at: update this check")
        check(ttl.get("AttributeName") == "expires_at" and ttl.get("TimeToLiveStatus") == "ENABLED",
              f"the table's TTL is {ttl}, the code writes expires_at")
        # The queues: redrive policy to the DLQ after MAX_RECEIVES receives, visibility ≥ 6× timeout.
        attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        self.queue_arn, self.dlq_arn = attrs["QueueArn"], queue_arn(dlq_url)
        check(self.queue_arn == queue_arn(queue_url), "queue ARN and URL disagree")
        policy = json.loads(attrs["RedrivePolicy"])
        with open(os.path.join(ROOT, "src", "redrive", "consumer.rs")) as f:
            max_receives = int(re.search(r"pub const MAX_RECEIVES: u32 = (\d+);", f.read()).group(1))
        check(policy["deadLetterTargetArn"] == self.dlq_arn, "the redrive queue's DLQ is not RedriveDLQ")
        check(int(policy["maxReceiveCount"]) == max_receives,
              f"maxReceiveCount {policy['maxReceiveCount']} != MAX_RECEIVES {max_receives} (src/redrive/consumer.rs)")
        redrive_timeout = self.functions["RedriveFunction"]["config"]["Timeout"]
        check(int(attrs["VisibilityTimeout"]) >= 6 * redrive_timeout,
              f"visibility timeout {attrs['VisibilityTimeout']} s < 6 × the consumer's {redrive_timeout} s")
        # The event source mapping: the redrive queue → the redrive function, with batch item failures.
        mappings = lam.list_event_source_mappings(FunctionName=self.functions["RedriveFunction"]["name"])["EventSourceMappings"]
        check(len(mappings) == 1, f"expected one event source mapping of the redrive function, got {len(mappings)}")
        self.mapping = mappings[0]
        check(self.mapping["EventSourceArn"] == self.queue_arn, "the event source mapping reads another queue")
        check("ReportBatchItemFailures" in self.mapping.get("FunctionResponseTypes", []),
              "the event source mapping lacks ReportBatchItemFailures: a failed message would redo the batch")
        check(not lam.list_event_source_mappings(FunctionName=self.functions["BridgeFunction"]["name"])["EventSourceMappings"],
              "the bridge has an event source mapping")
        # Reconciliation's switches reach the reconcile function (not started here: it needs Cartpanda).
        reconcile_name = self.resources["ReconcileFunction"]["PhysicalResourceId"]
        reconcile_env = lam.get_function_configuration(FunctionName=reconcile_name)["Environment"]["Variables"]
        check(reconcile_env.get("RECONCILE_S2S") == self.parameters["ReconcileS2S"],
              f"RECONCILE_S2S is {reconcile_env.get('RECONCILE_S2S')!r}, not the ReconcileS2S parameter")
        check(reconcile_env.get("RECONCILE") == self.resolve({"Ref": "Reconcile"}),
              "RECONCILE is not the Reconcile parameter")
        self.reconcile_queue(lam, sqs, reconcile_env)
        self.routes()
        self.outputs_match_readme()
        say(f"read back: environments, roles ({', '.join(f['role'] for f in self.functions.values())}), "
            f"table {table} (pk, TTL expires_at), queue → DLQ after {max_receives} receives, event source "
            f"mapping (batch {self.mapping.get('BatchSize')}, ReportBatchItemFailures)")

    def reconcile_queue(self, lam, sqs, env):
        """The queue of shops: the reconcile function's RECONCILE_QUEUE_URL, its DLQ, its visibility
        timeout, and its event source mapping to the reconcile function."""
        url = self.resources["ReconcileShopsQueue"]["PhysicalResourceId"]
        check(env.get("RECONCILE_QUEUE_URL") == url, "RECONCILE_QUEUE_URL is not the stack's ReconcileShopsQueue")
        check("RECONCILE_QUEUE_URL" not in self.functions["BridgeFunction"]["config"]["Environment"]["Variables"],
              "the bridge was given RECONCILE_QUEUE_URL")
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        self.shops_queue_url, self.shops_queue_arn = url, attrs["QueueArn"]
        self.shops_dlq_url = self.resources["ReconcileShopsDLQ"]["PhysicalResourceId"]
        policy = json.loads(attrs["RedrivePolicy"])
        check(policy["deadLetterTargetArn"] == queue_arn(self.shops_dlq_url), "the queue of shops' DLQ is not ReconcileShopsDLQ")
        timeout = self.functions["ReconcileFunction"]["config"]["Timeout"]
        check(int(attrs["VisibilityTimeout"]) >= 6 * timeout,
              f"queue of shops: visibility timeout {attrs['VisibilityTimeout']} s < 6 × the function's {timeout} s")
        mappings = lam.list_event_source_mappings(FunctionName=self.functions["ReconcileFunction"]["name"])["EventSourceMappings"]
        check(len(mappings) == 1, f"expected one event source mapping of the reconcile function, got {len(mappings)}")
        mapping = mappings[0]
        check(mapping["EventSourceArn"] == self.shops_queue_arn, "the reconcile function's mapping reads another queue")
        check("ReportBatchItemFailures" in mapping.get("FunctionResponseTypes", []),
              "the reconcile function's mapping lacks ReportBatchItemFailures")
        check(mapping.get("BatchSize") == 1, f"the reconcile function's mapping takes {mapping.get('BatchSize')} shops at once")
        # moto keeps no ScalingConfig: read in the translated template.
        esm = next(r for r in self.cfn_template["Resources"].values() if r["Type"] == "AWS::Lambda::EventSourceMapping"
                   and refs(r["Properties"]["FunctionName"]) == {"ReconcileFunction"})
        concurrency = esm["Properties"].get("ScalingConfig", {}).get("MaximumConcurrency")
        check(refs(concurrency) == {"ReconcileConcurrency"}, f"the mapping's MaximumConcurrency is {concurrency!r}")
        say(f"queue of shops: RECONCILE_QUEUE_URL, DLQ after {policy['maxReceiveCount']} receives, visibility "
            f"{attrs['VisibilityTimeout']} s, mapping to ReconcileFunction (batch 1, ReportBatchItemFailures, "
            f"MaximumConcurrency = ReconcileConcurrency)")

    def resolve(self, value):
        """A template value with Ref resolved to a parameter (given or default) or a resource."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, dict):
            if set(value) == {"Ref"}:
                name = value["Ref"]
                if name in self.parameters:
                    return self.parameters[name]
                if name in self.cfn_template.get("Parameters", {}):
                    return self.cfn_template["Parameters"][name].get("Default")
                return self.resources[name]["PhysicalResourceId"]
            return {k: self.resolve(v) for k, v in value.items()}
        return value

    def fill_dropped(self, logical, config):
        """moto's CloudFormation drops a function's Architectures and LoggingConfig (its
        AWS::Lambda::Function reads neither): said, and taken from the translated template."""
        props = self.cfn_template["Resources"][logical]["Properties"]
        for prop, default in (("Architectures", ["x86_64"]), ("LoggingConfig", None)):
            wanted = self.resolve(props.get(prop))
            if wanted is not None and config.get(prop) in (None, default) and config.get(prop) != wanted:
                say(f"{logical}: moto dropped {prop}; taken from the translated template: {wanted}")
                config[prop] = wanted

    def routes(self):
        """The HTTP API's routes, from the stack when moto has them, else the translated template's
        OpenAPI body (said so)."""
        if "HttpApi" in self.resources:
            api_id = self.resources["HttpApi"]["PhysicalResourceId"]
            keys = {r["RouteKey"] for r in self.client("apigatewayv2").get_routes(ApiId=api_id)["Items"]}
            source = "the stack's HTTP API (apigatewayv2:GetRoutes)"
        else:
            body = self.cfn_template["Resources"]["HttpApi"]["Properties"]["Body"]
            keys = {f"{m.upper()} {p}" for p, methods in body["paths"].items() for m in methods}
            source = "the translated template's OpenAPI body (moto does not create the HTTP API)"
        self.route_keys = keys
        for key in ("POST /cartpanda", "GET /cartpanda/s2s", "POST /cartpanda/{store}", "GET /cartpanda/{store}/s2s"):
            check(key in keys, f"route {key} missing from {source}")
        say(f"routes from {source}: {sorted(keys)}")

    def outputs_match_readme(self):
        """The outputs README tells the user to paste exist, and carry the placeholders it names;
        an output moto left unresolved is checked on its template expression."""
        with open(os.path.join(ROOT, "README.md")) as f:
            readme = f.read()
        named = set(re.findall(r"stack output `(\w+)`", readme))
        check({"WebhookUrl", "S2sUrl"} <= named, f"README names the outputs {named}")
        self.urls = {}
        for key in sorted(named | {"StoreWebhookUrlPattern"}):
            check(key in self.outputs, f"README names the stack output {key}, which the stack does not have")
            value = self.outputs[key]
            if "${" in value:
                expr = self.cfn_template["Outputs"][key]["Value"]["Fn::Sub"]
                resolved = expr.replace("${AWS::Region}", REGION).replace("${AWS::URLSuffix}", "amazonaws.com")
                check(value == resolved, f"{key}: moto gives {value!r}, the template says {expr!r}")
                check(expr.startswith("https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/"),
                      f"{key}: {expr} is not the HTTP API's default endpoint")
                say(f"output {key}: moto leaves ${{HttpApi}} unsubstituted; checked its template expression")
            self.urls[key] = value
        check("<your WebhookToken>" in self.urls["WebhookUrl"] and "`<your WebhookToken>`" in readme,
              "README and WebhookUrl disagree on the token placeholder")

    # --- 3. credentials and enforcement ----------------------------------------------------------

    def credentials(self):
        iam, sts = self.client("iam"), self.client("sts")
        iam.create_user(UserName="stack-test-operator")
        iam.put_user_policy(UserName="stack-test-operator", PolicyName="operator", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="stack-test-operator")["AccessKey"]
        self.operator = {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}
        log_groups = {f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{r['PhysicalResourceId']}"
                      for r in self.resources.values() if r["ResourceType"] == "AWS::Logs::LogGroup"}
        for logical, info in self.functions.items():
            info["grants"] = []
            for grant in grants_of(info["role"], info["documents"]):
                if grant[3] in log_groups:
                    # CloudFormation's Fn::GetAtt LogGroup.Arn ends with ":*" (all the group's
                    # streams; the form IAM policies use), moto's does not: evaluated as AWS has it.
                    grant = grant[:3] + (grant[3] + ":*",)
                info["grants"].append(grant)
        say("moto resolves Fn::GetAtt LogGroup.Arn without the ':*' CloudFormation ends it with: "
            "the roles' log group grants are evaluated with it")
        for logical, info in self.functions.items():
            # moto authorises every non-S3 request against resource "*": the role's actions are
            # loaded with resources widened, so moto proves the actions and the evaluator above
            # (on the documents read before) the resources.
            for name, doc in info["documents"]:
                wide = copy.deepcopy(doc)
                for st in as_list(wide["Statement"]):
                    st["Resource"] = "*"
                iam.put_role_policy(RoleName=info["role"], PolicyName=name, PolicyDocument=json.dumps(wide))
            creds = sts.assume_role(RoleArn=info["config"]["Role"], RoleSessionName=info["name"])["Credentials"]
            info["credentials"] = creds
        previous = self.moto.enforce_iam()
        denied = False
        try:
            self.client("dynamodb", self.functions["BridgeFunction"]["credentials"]).scan(
                TableName=self.outputs["DedupTableName"])
        except Exception as e:  # noqa: BLE001
            denied = "AccessDenied" in str(e)
        check(denied, "moto did not deny dynamodb:Scan to the bridge's role: IAM enforcement is off")
        self.client("sqs").list_queues()
        say(f"IAM enforcement on (INITIAL_NO_AUTH_ACTION_COUNT {previous['PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT']} → 0): "
            "moto denies dynamodb:Scan to the bridge's assumed role")

    # --- 4. the functions --------------------------------------------------------------------------

    def start_functions(self):
        build = self.args.build_dir
        for logical, info in self.functions.items():
            binary = os.path.join(build, logical, "bootstrap")
            check(os.path.exists(binary), f"{binary} missing: `make sam-build` first")
            info["binary"] = binary
            proxy = self.proxy(logical)
            info["labels"] = {logical: logical}
            info["api"] = api = RuntimeApi(info["config"]["FunctionArn"], info["config"]["Timeout"])
            self.cleanup.append(api)
            env = lambda_environment(info["config"], api.address, info["credentials"])
            overrides = {"AWS_ENDPOINT_URL_DYNAMODB": proxy.url, "AWS_ENDPOINT_URL_SQS": proxy.url}
            if logical == "ReconcileFunction":
                # The shops' Cartpanda API tokens (SSM), and a stand-in of Cartpanda's order list
                # (the stack's CartpandaOrderListUrl must be https): the only stack variable replaced.
                overrides["AWS_ENDPOINT_URL_SSM"] = proxy.url
                overrides["CARTPANDA_ORDER_LIST_URL"] = self.cartpanda.base + "/api/v3/{shop_slug}/orders"
            env.update(overrides)
            info["env"] = env
            info["proxy"] = proxy
            info["process"] = fn = Function(logical, binary, env)
            self.cleanup.append(fn)
        sizes = set()
        for logical, info in self.functions.items():
            info["api"].wait_ready(info["process"])
            actual = info["process"].environ()
            expected = {**info["env"], **qemu_env(info["binary"])}
            check(actual == expected, f"{logical}: the process environment differs from the stack's: "
                  f"{sorted(set(actual.items()) ^ set(expected.items()))[:5]}")
            stack_vars = info["config"]["Environment"]["Variables"]
            replaced = {"CARTPANDA_ORDER_LIST_URL"} if logical == "ReconcileFunction" else set()
            check(all(actual[k] == str(v) for k, v in stack_vars.items() if k not in replaced),
                  f"{logical}: a stack variable was changed")
            with open(info["binary"], "rb") as f:
                sizes.add(hash(f.read()))
        check(len(sizes) == 1, "the functions' packages hold different programs: sam build built more than once")
        arch = "arm64 under qemu-user" if is_arm64(self.functions["BridgeFunction"]["binary"]) else "native"
        say(f"the functions initialised ({arch}, one program, chosen by _HANDLER "
            f"{'/'.join(i['config']['Handler'] for i in self.functions.values())}) with the stack's environment, "
            f"only AWS_ENDPOINT_URL_DYNAMODB/SQS added (and for reconciliation AWS_ENDPOINT_URL_SSM and the "
            f"order list's URL, a local stand-in), and their roles' credentials")

    def webhook(self, order_id, url_key="WebhookUrl", store=None, token=TOKEN):
        url = urllib.parse.urlsplit(self.urls[url_key].replace("${HttpApi}", "api"))
        path = url.path
        route = f"POST {path}"
        params = None
        if store:
            check("<store>" in path, f"{url_key} has no <store> placeholder")
            path = path.replace("<store>", store)
            route = "POST /cartpanda/{store}"
            params = {"store": store}
            check(route in self.route_keys, f"no route {route}")
        else:
            check(route in self.route_keys, f"{url_key}'s path {url.path} is not a route of the API")
        query = dict(urllib.parse.parse_qsl(url.query))
        check(query.get("token") in ("<your WebhookToken>", "<store token>"), f"{url_key}: token placeholder {query}")
        bridge = self.functions["BridgeFunction"]
        return outcome(bridge["api"].invoke(webhook_event(order_id, token, path, route, params), bridge["process"]))

    def expect(self, got, want, what):
        check(got == want, f"{what}: expected {want}, got {got}\n"
              f"{self.functions['BridgeFunction']['process'].last_log(15)}")

    def operator_admin(self, args):
        """An operator command (`cartpanda-redtrack-admin …`, what `make redrive` and `shop put`
        run), with the operator's credentials against moto."""
        binary = self.admin
        env = {"PATH": os.environ["PATH"], "AWS_REGION": REGION, "AWS_ENDPOINT_URL": self.moto.url,
               "AWS_ACCESS_KEY_ID": self.operator["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": self.operator["SecretAccessKey"], **qemu_env(binary)}
        return subprocess.run(command_for(binary) + args, env=env, capture_output=True, text=True, timeout=120)

    def depth(self, url):
        a = self.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return {k: int(a.get(f"ApproximateNumberOf{k}", 0)) for k in ("Messages", "MessagesNotVisible", "MessagesDelayed")}

    def poll(self, esm, want, timeout):
        """What the event source mapping does: receive up to 10 messages with their attributes."""
        got, until = [], time.time() + timeout
        while len(got) < want and time.time() < until:
            got += esm.receive_message(QueueUrl=self.outputs["RedriveQueueUrl"], MaxNumberOfMessages=10,
                                       WaitTimeSeconds=2, AttributeNames=["All"], MessageSystemAttributeNames=["All"],
                                       MessageAttributeNames=["All"]).get("Messages", [])
        check(len(got) == want, f"expected {want} messages on the redrive queue within {timeout} s, got {len(got)}")
        return got

    def redrive(self, esm, messages):
        """The SQS event Lambda builds from the messages, one invocation, then the mapping's
        deletes of the messages not reported as failed. Returns the failed message IDs."""
        event = {"Records": [{
            "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs", "eventSourceARN": self.queue_arn, "awsRegion": REGION,
        } for m in messages]}
        fn = self.functions["RedriveFunction"]
        answer = fn["api"].invoke(event, fn["process"])
        failed = {f["itemIdentifier"] for f in answer.get("batchItemFailures", [])}
        for m in messages:
            if m["MessageId"] not in failed:
                esm.delete_message(QueueUrl=self.outputs["RedriveQueueUrl"], ReceiptHandle=m["ReceiptHandle"])
        return failed

    def paths(self):
        rt = self.redtrack
        bridge, redrive = self.functions["BridgeFunction"], self.functions["RedriveFunction"]
        table = self.outputs["DedupTableName"]
        ddb = self.client("dynamodb")
        status = lambda oid: ddb.get_item(TableName=table, Key={"pk": {"S": f"evt#{oid}-purchase"}}).get(  # noqa: E731
            "Item", {}).get("status", {}).get("S")

        self.phase = "webhook: claim, send, record"
        self.expect(self.webhook(91000001), (200, "sent"), "a new conversion")
        check(rt.accepted("91000001-purchase") == 1, "RedTrack did not receive the conversion once")
        check(status(91000001) == "SENT", f"the stack's table holds {status(91000001)} for it, not SENT")
        self.phase = "webhook: duplicate"
        self.expect(self.webhook(91000001), (200, "duplicate"), "its redelivery")
        check(rt.accepted("91000001-purchase") == 1, "the duplicate reached RedTrack")
        say("webhook → claim → RedTrack → recorded SENT in the stack's table; its redelivery answered duplicate")

        self.phase = "named store: settings read"
        put = self.operator_admin(["store", "put", STORE, "--token", STORE_TOKEN, "--table", table,
                                   "--postback-url", rt.base + "/store-postback?clickid={cid}&sum={total_price}"])
        check(put.returncode == 0, f"shop put failed: {put.stderr.strip()}")
        self.expect(self.webhook(91000002, "StoreWebhookUrlPattern", STORE, STORE_TOKEN), (200, "sent"),
                    "a webhook on the named store's URL")
        check(rt.accepted("91000002-purchase", "/store-postback") == 1, "the store's postback URL was not used")
        say(f"shop `{STORE}` put with the admin CLI, its webhook (StoreWebhookUrlPattern) sent to its own postback URL")

        # RedTrack down: three conversions queued (B sent later, C refused, E retried).
        self.phase = "RedTrack down: queued for redrive"
        rt.decide = lambda path, query: 503
        first_queued = time.time()
        for oid in (91000003, 91000004, 91000005):
            self.expect(self.webhook(oid), (202, "queued"), f"conversion {oid} while RedTrack is down")
            check(status(oid) == "QUEUED", f"{oid} is {status(oid)} in the table, not QUEUED")
        depth = self.depth(self.outputs["RedriveQueueUrl"])
        check(depth["Messages"] + depth["MessagesDelayed"] == 3, f"the stack's queue holds {depth}, expected 3 messages")
        # The queue unavailable too: the claim is released so that Cartpanda's redelivery sends.
        self.phase = "RedTrack and SQS down: claim released"
        bridge["proxy"].fail.add("sqs:SendMessage")
        self.expect(self.webhook(91000006), (502, "failed"), "RedTrack and the queue down")
        bridge["proxy"].fail.clear()
        check(status(91000006) is None, "the claim of a conversion nobody could take was not released")
        say("RedTrack down: 3 conversions in the stack's queue (answered 202 queued, delayed by REDRIVE_DELAY_S); "
            "with the queue down too, answered 502 and the claim released")

        esm = self.client("sqs", redrive["credentials"], self.proxy("RedriveFunction|AWS: event source mapping").url)
        redrive["labels"]["RedriveFunction|AWS: event source mapping"] = "AWS: event source mapping"
        self.phase = "event source mapping created"
        esm.get_queue_attributes(QueueUrl=self.outputs["RedriveQueueUrl"], AttributeNames=["All"])
        delay = int(bridge["config"]["Environment"]["Variables"].get("REDRIVE_DELAY_S", "60"))
        say(f"waiting for the queued messages (REDRIVE_DELAY_S = {delay} s)")
        self.phase = "redrive: sent, refused → DLQ, retry delayed"
        messages = self.poll(esm, 3, delay + 60)
        check(time.time() - first_queued >= delay - 1, "the messages were visible before REDRIVE_DELAY_S")
        ids = {json.loads(m["Body"])["order_id"]: m["MessageId"] for m in messages}
        rt.decide = lambda path, q: {"91000003": 200, "91000004": 400}.get(q.get("rdtk_event_id", "").split("-")[0], 503)
        failed = self.redrive(esm, messages)
        check(failed == {ids["91000005"]}, f"batch item failures {failed}, expected only the retried one")
        check(rt.accepted("91000003-purchase") == 1 and status(91000003) == "SENT", "the queued conversion was not sent")
        check(self.depth(self.outputs["RedriveDLQUrl"])["Messages"] == 1, "the refused conversion is not in the DLQ")
        check(self.depth(self.outputs["RedriveQueueUrl"])["MessagesNotVisible"] == 1, "the retried message is visible")
        check(any(c[1] == "sqs:ChangeMessageVisibility" and c[0] == "RedriveFunction" for c in self.calls),
              "the retried message's visibility was not changed")
        say("redrive function fed the SQS event of the stack's queue: one sent, one refused → the stack's DLQ, "
            "one delayed (ChangeMessageVisibility, batch item failure)")

        self.phase = "make redrive: DLQ → queue"
        moved = subprocess.run(
            ["make", "--no-print-directory", "redrive", f"STACK={STACK}",
             "ADMIN=" + " ".join(command_for(self.admin))],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "AWS_ENDPOINT_URL": self.moto.url, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
                 "AWS_ACCESS_KEY_ID": self.operator["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": self.operator["SecretAccessKey"],
                 **qemu_env(self.admin)})
        check(moved.returncode == 0 and "moved 1 message" in moved.stdout,
              f"make redrive: {moved.returncode}\n{moved.stdout}\n{moved.stderr}")
        check(self.depth(self.outputs["RedriveDLQUrl"])["Messages"] == 0, "the DLQ is not empty after make redrive")
        say("`make redrive` (outputs from the stack) moved it back to the redrive queue")

        # A message whose postback is not a URL (tampered with, or from another version).
        self.phase = "redrive: unreadable postback released → DLQ"
        self.client("sqs").send_message(QueueUrl=self.outputs["RedriveQueueUrl"], MessageBody=json.dumps({
            "v": 1, "key": "evt#91000007-purchase", "event_id": "91000007-purchase", "fingerprint": "0" * 32,
            "order_id": "91000007", "event": "order.paid", "conversion_type": "Purchase",
            "postback": "not a URL", "first_failure_ms": int(time.time() * 1000)}))
        self.phase = "redrive: sent after make redrive"
        rt.decide = lambda path, query: 200
        messages = self.poll(esm, 2, 30)
        self.phase = "redrive: sent after make redrive / unreadable postback → DLQ"
        failed = self.redrive(esm, messages)
        check(not failed, f"batch item failures {failed}")
        check(rt.accepted("91000004-purchase") == 1 and status(91000004) == "SENT",
              "the conversion moved back from the DLQ was not sent")
        check(status(91000007) is None, "the unreadable message's claim was not released")
        check(self.depth(self.outputs["RedriveDLQUrl"])["Messages"] == 1, "the unreadable message is not in the DLQ")
        self.phase = "webhook: duplicate of a redriven conversion"
        self.expect(self.webhook(91000003), (200, "duplicate"), "a redelivery of the redriven conversion")
        check(rt.accepted("91000003-purchase") == 1, "the redriven conversion reached RedTrack twice")
        say("after make redrive: sent once; an unreadable message released and handed to the DLQ; "
            "the redriven conversion's redelivery answered duplicate")

    def reconcile(self):
        """A named shop with reconciliation on, two paid orders no webhook brought: the schedule's
        invocation queues the shop, the reconcile function fed the SQS event of that message sends
        one and (RedTrack refusing it for now) queues the other for redrive; a second round sends
        nothing."""
        rt, fn = self.redtrack, self.functions["ReconcileFunction"]
        table = self.outputs["DedupTableName"]
        self.phase = "reconcile: shop put with --reconcile"
        put = self.operator_admin(["shop", "put", RECONCILED, "--token", STORE_TOKEN, "--table", table,
                                   "--postback-url", rt.base + "/reconcile-postback?clickid={cid}&sum={total_price}",
                                   "--reconcile", "true", "--shop-slug", RECONCILED, "--verify-orders", "false",
                                   "--cartpanda-api-token", RECONCILED_API_TOKEN])
        check(put.returncode == 0, f"shop put --reconcile failed: {put.stderr.strip()}")
        self.cartpanda.add(RECONCILED, 92000001)
        self.cartpanda.add(RECONCILED, 92000002)
        rt.decide = lambda path, q: 503 if q.get("rdtk_event_id", "").startswith("92000002") else 200
        esm = self.client("sqs", fn["credentials"], self.proxy("ReconcileFunction|AWS: event source mapping").url)
        fn["labels"]["ReconcileFunction|AWS: event source mapping"] = "AWS: event source mapping"
        self.phase = "reconcile: event source mapping created"
        esm.get_queue_attributes(QueueUrl=self.shops_queue_url, AttributeNames=["All"])
        schedule = {"version": "0", "source": "aws.scheduler", "detail-type": "Scheduled Event", "detail": {}}
        for round_ in (1, 2):
            self.phase = "reconcile: the schedule queues the shops"
            answer = fn["api"].invoke(schedule, fn["process"])
            check(answer == {"queued": 1, "failed": []}, f"the schedule's invocation answered {answer}\n{fn['process'].last_log(15)}")
            check(not self.cartpanda.asked, "the schedule's invocation listed orders itself")
            self.phase = "reconcile: one shop per message"
            messages = esm.receive_message(QueueUrl=self.shops_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2,
                                           AttributeNames=["All"]).get("Messages", [])
            check([json.loads(m["Body"])["shop"] for m in messages] == [RECONCILED], f"queued: {messages}")
            event = {"Records": [{
                "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs", "eventSourceARN": self.shops_queue_arn, "awsRegion": REGION,
            } for m in messages]}
            answer = fn["api"].invoke(event, fn["process"], timeout=120)
            check(answer == {"batchItemFailures": []}, f"the shop's message answered {answer}\n{fn['process'].last_log(15)}")
            for m in messages:
                esm.delete_message(QueueUrl=self.shops_queue_url, ReceiptHandle=m["ReceiptHandle"])
            check(self.cartpanda.asked and all(a == RECONCILED for a in self.cartpanda.asked),
                  f"order list requests: {self.cartpanda.asked}")
            self.cartpanda.asked.clear()
            check(rt.accepted("92000001-purchase", "/reconcile-postback") == 1,
                  f"round {round_}: the missing conversion reached RedTrack {rt.accepted('92000001-purchase', '/reconcile-postback')} times")
        check(rt.attempts("92000002-purchase") >= 1, "the conversion RedTrack refused was never tried")
        status = self.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": f"evt#{RECONCILED}#92000002-purchase"}})
        check(status.get("Item", {}).get("status", {}).get("S") == "QUEUED", f"the refused conversion is {status.get('Item')}")
        say(f"reconciliation: shop `{RECONCILED}` put with --reconcile (API token in SSM); the schedule's invocation "
            "queued it on the stack's queue of shops; the reconcile function fed that SQS event listed its orders "
            "from the stand-in, sent the missing conversion to RedTrack and queued the one RedTrack refused for "
            "redrive; a second round sent nothing again")

    def log_delivery(self):
        """What Lambda does with each function's output: its log stream, then the lines."""
        for logical, info in self.functions.items():
            label = f"{logical}|AWS: log delivery"
            info["labels"][label] = "AWS: log delivery"
            logs = self.client("logs", info["credentials"], self.proxy(label).url)
            group, stream = info["env"]["AWS_LAMBDA_LOG_GROUP_NAME"], info["env"]["AWS_LAMBDA_LOG_STREAM_NAME"]
            self.phase = f"{logical}'s output"
            logs.create_log_stream(logGroupName=group, logStreamName=stream)
            lines = [line for line in info["process"].log if line.strip()][:1000] or ["(no output)"]
            now = int(time.time() * 1000)
            logs.put_log_events(logGroupName=group, logStreamName=stream,
                                logEvents=[{"timestamp": now, "message": line} for line in lines])
        say("log delivery: each function's output put in its own log group with its role")

    def stop(self):
        for thing in reversed(self.cleanup):
            try:
                thing.stop()
            except Exception:  # noqa: BLE001
                pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", default=os.path.join(ROOT, ".aws-sam", "build"))
    parser.add_argument("--moto-port", type=int, default=5056)
    parser.add_argument("--admin", default=os.path.join(ROOT, "target", "debug", "cartpanda-redtrack-admin"),
                        help="the operator CLI (cartpanda-redtrack-admin) built for this machine")
    args = parser.parse_args()
    stack = Stack(args)
    try:
        stack.run()
    finally:
        stack.stop()


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"\nstack-test FAILED: {e}", file=sys.stderr)
        sys.exit(1)
