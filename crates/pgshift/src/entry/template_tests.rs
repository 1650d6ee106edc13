//! `infra/template.yaml`, parsed (YAML, CloudFormation's short-form tags kept as tags), checked against what the code
//! and the state machine definition need of it: what the linters of `scripts/test.sh` (cfn-lint, `sam validate
//! --lint`, checkov) cannot know. Each check reads the structure (a resource's properties, a role's statements), never
//! the text.

use std::collections::BTreeSet;

use serde_norway::Value;

use crate::contract::code::Code;
use crate::entry::local::{local_machine, DEFINITION, FUNCTIONS, RDS_SDK};

fn repo(path: &str) -> String {
    let p = format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// A value as text: a scalar, a tagged value as `!Tag value` (`!Ref X`, `!Sub "…"`), a list joined by spaces.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Tagged(t) => format!("{} {}", t.tag, text(&t.value)),
        Value::Sequence(s) => s.iter().map(text).collect::<Vec<_>>().join(" "),
        Value::Null => String::new(),
        Value::Mapping(_) => format!("{v:?}"),
    }
}

/// A value that may be one item or a list of them, as a list.
fn list(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(s) => s.iter().map(text).collect(),
        Value::Null => Vec::new(),
        other => vec![text(other)],
    }
}

/// One statement of a role's inline policies; `condition` is the stack condition of an `!If` around it.
#[derive(Debug, Clone)]
struct Statement {
    condition: Option<String>,
    actions: Vec<String>,
    resources: Vec<String>,
    /// The statement's own IAM `Condition`, as text.
    iam_condition: String,
}

impl Statement {
    fn of(v: &Value, condition: Option<String>) -> Option<Self> {
        let map = v.as_mapping()?;
        assert_eq!(map.get("Effect").map(text).as_deref(), Some("Allow"), "{v:?}");
        Some(Statement {
            condition,
            actions: list(map.get("Action")?),
            resources: list(map.get("Resource")?),
            iam_condition: map.get("Condition").map(|c| format!("{c:?}")).unwrap_or_default(),
        })
    }

    fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action)
    }
}

struct Template(Value);

impl Template {
    fn load() -> Self {
        Template(serde_norway::from_str(&repo("infra/template.yaml")).expect("infra/template.yaml is YAML"))
    }

    fn resource(&self, name: &str) -> &Value {
        self.0
            .get("Resources")
            .and_then(|r| r.get(name))
            .unwrap_or_else(|| panic!("resource {name}"))
    }

    fn props(&self, name: &str) -> &Value {
        self.resource(name)
            .get("Properties")
            .unwrap_or_else(|| panic!("{name}.Properties"))
    }

    /// Every statement of a resource's `Policies` (`- Statement: [...]`), an `!If [cond, statement, NoValue]`
    /// unwrapped with its condition (the else branch too, when it is a statement).
    fn statements(&self, name: &str) -> Vec<Statement> {
        let mut out = Vec::new();
        for policy in self
            .props(name)
            .get("Policies")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            for s in policy
                .get("Statement")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                match s {
                    Value::Tagged(t) if t.tag == "!If" => {
                        let arms = t.value.as_sequence().expect("!If [condition, then, else]");
                        let cond = text(&arms[0]);
                        out.extend(Statement::of(&arms[1], Some(cond.clone())));
                        out.extend(Statement::of(&arms[2], Some(format!("!{cond}"))));
                    }
                    s => out.extend(Statement::of(s, None)),
                }
            }
        }
        out
    }

    /// The actions of a resource's statements of a service (`rds:`), whatever their conditions.
    fn actions(&self, name: &str, service: &str) -> BTreeSet<String> {
        self.statements(name)
            .iter()
            .flat_map(|s| s.actions.clone())
            .filter(|a| a.starts_with(service))
            .collect()
    }

    fn env(&self, function: &str, var: &str) -> Option<String> {
        self.props(function)
            .get("Environment")
            .and_then(|e| e.get("Variables"))
            .and_then(|v| v.get(var))
            .map(text)
    }

    fn function(&self, f: &str) -> Value {
        let globals = self
            .0
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .cloned()
            .unwrap_or(Value::Null);
        let mut merged = globals.as_mapping().cloned().unwrap_or_default();
        for (k, v) in self.props(f).as_mapping().into_iter().flatten() {
            merged.insert(k.clone(), v.clone());
        }
        Value::Mapping(merged)
    }
}

const FUNCTION_RESOURCES: [(&str, &str); 3] = [
    ("PlannerFunction", "planner"),
    ("ExtractorFunction", "extractor"),
    ("LoaderFunction", "loader"),
];

#[test]
fn the_infrastructure_deploys_this_definition_with_every_placeholder_and_trigger() {
    let t = Template::load();
    let machine = t.props("Pipeline");
    assert_eq!(text(&machine["DefinitionUri"]), "../statemachine/pipeline.asl.json");
    for (name, _) in FUNCTIONS {
        assert!(DEFINITION.contains(&format!("${{{name}}}")), "{name} is used");
        let function = name.trim_end_matches("Arn");
        assert_eq!(
            text(&machine["DefinitionSubstitutions"][*name]),
            format!("!GetAtt {function}.Arn"),
            "the template substitutes {name}"
        );
    }
    // The rule starts runs on exactly the events the planner accepts: all, automated or manual (SnapshotTypes).
    let pattern = &machine["Events"]["SnapshotCreated"]["Properties"]["Pattern"];
    assert_eq!(
        text(&pattern["detail"]["EventID"]),
        "!FindInMap SnapshotEvents !Ref SnapshotTypes Ids"
    );
    let ids = |kind: &str| -> BTreeSet<String> {
        list(&t.0["Mappings"]["SnapshotEvents"][kind]["Ids"])
            .into_iter()
            .collect()
    };
    let want = |keep: &dyn Fn(bool) -> bool| -> BTreeSet<String> {
        crate::entry::trigger::SNAPSHOT_CREATED
            .iter()
            .filter(|e| keep(e.3))
            .map(|e| e.0.to_string())
            .collect()
    };
    assert_eq!(ids("all"), want(&|_| true));
    assert_eq!(ids("automated"), want(&|automated| automated));
    assert_eq!(ids("manual"), want(&|automated| !automated));
}

#[test]
fn each_function_is_built_from_its_binary_and_may_do_what_its_handler_does() {
    let t = Template::load();
    // The planner reads an existing plan of the run id (a missing one must be 404: ListBucket) and deletes a
    // restarted run's objects; the loader reads every result and writes the report and the ledger.
    for (f, actions) in [
        (
            "PlannerFunction",
            &["s3:GetObject", "s3:DeleteObject", "s3:ListBucket", "s3:PutObject"][..],
        ),
        ("LoaderFunction", &["s3:GetObject", "s3:ListBucket", "s3:PutObject"]),
        ("ExtractorFunction", &["s3:PutObject", "s3:GetObject"]),
    ] {
        for a in actions {
            assert!(t.statements(f).iter().any(|s| s.allows(a)), "{f} may {a}");
        }
    }
    // The loader prices the extractors at their MemorySize.
    assert_eq!(
        t.env("LoaderFunction", "PGSHIFT_EXTRACTOR_MEMORY_MB"),
        Some(text(&t.props("ExtractorFunction")["MemorySize"]))
    );
    // What `sam build` (rust-cargolambda, scripts/package.sh) builds: each function's Binary is a [[bin]] of the
    // functions package, in the workspace at CodeUri, run as `bootstrap` on provided.al2023, arm64.
    let bins = repo("functions/Cargo.toml");
    assert!(
        repo("Cargo.toml").contains("\"functions\""),
        "the workspace at CodeUri builds the functions package"
    );
    for (f, binary) in FUNCTION_RESOURCES {
        let merged = t.function(f);
        assert_eq!(text(&merged["Runtime"]), "provided.al2023", "{f}");
        assert_eq!(list(&merged["Architectures"]), vec!["arm64"], "{f}");
        assert_eq!(text(&merged["Handler"]), "bootstrap", "{f}");
        assert_eq!(text(&merged["CodeUri"]), "../", "{f}");
        assert_eq!(text(&merged["Tags"]["CostCenter"]), "!Ref CostCenter", "{f}");
        let meta = &t.resource(f)["Metadata"];
        assert_eq!(text(&meta["BuildMethod"]), "rust-cargolambda", "{f}");
        assert_eq!(text(&meta["BuildProperties"]["Binary"]), binary, "{f}");
        assert!(
            bins.contains(&format!("[[bin]]\nname = \"{binary}\"")),
            "functions/Cargo.toml has {binary}"
        );
        // Every function logs to a group of the stack's, kept LogRetentionDays, as the state machine's is.
        let group = f.replace("Function", "Logs");
        assert_eq!(text(&merged["LoggingConfig"]["LogGroup"]), format!("!Ref {group}"));
        assert_eq!(text(&t.props(&group)["RetentionInDays"]), "!Ref LogRetentionDays");
    }
    assert_eq!(
        text(&t.props("PipelineLogs")["RetentionInDays"]),
        "!Ref LogRetentionDays"
    );
    // Only the functions that reach the source are in the VPC; the loader reaches public AWS endpoints only.
    assert!(t.function("PlannerFunction").get("VpcConfig").is_some());
    assert!(t.function("ExtractorFunction").get("VpcConfig").is_some());
    assert!(
        t.function("LoaderFunction").get("VpcConfig").is_none(),
        "the loader is out of the VPC"
    );
    // The planner's scope of sources and the warehouse it plans for come from the template.
    assert_eq!(
        t.env("PlannerFunction", "PGSHIFT_SOURCE_IDENTIFIERS").as_deref(),
        Some("!Ref SourceDbIdentifiers")
    );
    assert_eq!(
        t.env("PlannerFunction", "PGSHIFT_WAREHOUSE_KIND").as_deref(),
        Some("redshift")
    );
    for e in ["S3GatewayEndpoint", "SecretsManagerEndpoint"] {
        assert_eq!(text(&t.resource(e)["Type"]), "AWS::EC2::VPCEndpoint", "{e}");
        assert_eq!(text(&t.resource(e)["Condition"]), "CreateEndpoints", "{e}");
    }
}

#[test]
fn the_templates_source_url_verifies_the_server_against_the_packaged_rds_bundle() {
    let t = Template::load();
    let urls: Vec<String> = ["PlannerFunction", "ExtractorFunction"]
        .iter()
        .map(|f| t.env(f, "PGSHIFT_SOURCE").expect("PGSHIFT_SOURCE"))
        .collect();
    assert_eq!(urls[0], urls[1], "the planner and the extractor read the same source");
    let sub = urls[0].strip_prefix("!Sub ").expect("a !Sub");
    let url = |mode: &str| {
        sub.replace("${SourceHost}", "orders.abc.eu-west-1.rds.amazonaws.com")
            .replace("${SourcePort}", "5432")
            .replace("${SourceDatabase}", "orders")
            .replace("${SourceSslMode}", mode)
    };
    // verify-full reads the bundle at cold start: here, where /var/task holds none, it names the path.
    let e = crate::pgclient::tls::config(&url("verify-full"))
        .err()
        .expect("no bundle here");
    assert!(e.contains("sslrootcert /var/task/rds-global-bundle.pem"), "{e}");
    assert!(crate::pgclient::tls::config(&url("require")).is_ok());
    let package = repo("scripts/package.sh");
    assert!(package.contains("/$f/rds-global-bundle.pem") && package.contains("PlannerFunction ExtractorFunction"));
}

#[test]
fn the_state_machine_may_make_exactly_the_rds_calls_of_the_definition_and_the_sweep_only_deletes() {
    let t = Template::load();
    let m = local_machine(DEFINITION).expect("definition");
    let mut used: BTreeSet<String> = m
        .tasks()
        .iter()
        .filter_map(|(_, r)| r.strip_prefix(RDS_SDK))
        .map(|a| {
            let mut c = a.chars();
            let first = c.next().map(|f| f.to_ascii_uppercase()).unwrap_or_default();
            format!("rds:{first}{}", c.as_str())
        })
        .collect();
    // Tags given at creation are authorised as AddTagsToResource.
    used.insert("rds:AddTagsToResource".into());
    assert_eq!(
        t.actions("Pipeline", "rds:"),
        used,
        "the state machine's RDS actions are the definition's"
    );
    let sweep: BTreeSet<String> = [
        "rds:DescribeDBInstances",
        "rds:DescribeDBClusters",
        "rds:DeleteDBInstance",
        "rds:DeleteDBCluster",
    ]
    .map(String::from)
    .into();
    assert_eq!(
        t.actions("LoaderFunction", "rds:"),
        sweep,
        "the loader sweeps: it lists and deletes, nothing else"
    );
    for s in t
        .statements("LoaderFunction")
        .iter()
        .filter(|s| s.allows("rds:DeleteDBInstance") || s.allows("rds:DeleteDBCluster"))
    {
        assert!(
            s.resources
                .iter()
                .all(|r| r.ends_with(":db:pgshift-*") || r.ends_with(":cluster:pgshift-*")),
            "deletes by prefix only: {s:?}"
        );
    }
    for f in ["PlannerFunction", "ExtractorFunction"] {
        assert!(t.actions(f, "rds:").is_empty(), "{f} has no RDS access");
    }
}

#[test]
fn every_error_name_of_the_definition_exists_and_every_retryable_one_is_retried() {
    let m = local_machine(DEFINITION).expect("definition");
    for (state, name, _) in m.error_names() {
        // RDS's names come from the SDK integration (Step Functions names them `Rds.<Code>Exception`).
        let known = Code::of(&name).is_some()
            || name.starts_with("States.")
            || name.starts_with("Lambda.")
            || (name.starts_with("Rds.") && name.ends_with("Exception"));
        assert!(known, "state {state} names {name}, which no handler reports");
    }
    for (state, resource) in m.tasks() {
        if resource.starts_with(RDS_SDK) {
            assert!(
                m.retries(&state, "Rds.ThrottlingException"),
                "{state} does not retry RDS throttling"
            );
            continue;
        }
        for name in Code::ALL.iter().filter(|c| c.is_retryable()).map(|c| c.name()) {
            assert!(m.retries(&state, name), "{state} ({resource}) does not retry {name}");
        }
        for name in ["Lambda.ServiceException", "Lambda.TooManyRequestsException"] {
            assert!(m.retries(&state, name), "{state} does not retry {name}");
        }
        for name in Code::ALL.iter().filter(|c| !c.is_retryable()).map(|c| c.name()) {
            assert!(!m.retries(&state, name), "{state} retries the fatal {name}");
        }
    }
}

/// What a first deploy and a first run need of the template, beyond what the linters can see: credentials for the
/// loader's database as well as its user, a Serverless workgroup's credentials, the Distributed Map's child
/// executions stoppable, and secrets under a customer-managed key decryptable.
#[test]
fn the_loader_may_get_credentials_for_its_database_and_the_map_may_stop_its_children() {
    let t = Template::load();
    let loader = t.statements("LoaderFunction");
    let creds = loader
        .iter()
        .find(|s| s.allows("redshift:GetClusterCredentials"))
        .expect("GetClusterCredentials");
    assert_eq!(creds.condition.as_deref(), Some("HasDbUser"));
    assert_eq!(
        creds.resources,
        vec!["!Ref RedshiftDbUserArn", "!Ref RedshiftDbNameArn"],
        "the dbuser and the dbname"
    );
    assert!(
        t.0["Rules"].get("DbUserNeedsItsDatabase").is_some(),
        "a user alone is refused at deploy"
    );
    let serverless = loader
        .iter()
        .find(|s| s.allows("redshift-serverless:GetCredentials"))
        .expect("GetCredentials");
    assert_eq!(
        serverless.condition.as_deref(),
        Some("!HasRedshiftSecret"),
        "without a secret only"
    );
    let stop = t
        .statements("Pipeline")
        .into_iter()
        .find(|s| s.allows("states:StopExecution") && s.allows("states:DescribeExecution"))
        .expect("the Map's execution rights");
    for form in [
        ":execution:${AWS::StackName}-pipeline:*",
        ":execution:${AWS::StackName}-pipeline/*",
    ] {
        assert!(
            stop.resources
                .iter()
                .any(|r| r.ends_with(&format!("{form}\"")) || r.ends_with(form)),
            "{form}: {stop:?}"
        );
    }
    // Each function that reads a secret may decrypt it with the customer-managed key when one is given, only
    // through Secrets Manager.
    for (f, _) in FUNCTION_RESOURCES {
        let kms = t
            .statements(f)
            .into_iter()
            .find(|s| s.allows("kms:Decrypt"))
            .unwrap_or_else(|| panic!("{f} may decrypt its secret"));
        assert_eq!(kms.condition.as_deref(), Some("HasSecretsKey"), "{f}");
        assert_eq!(kms.resources, vec!["!Ref SecretsKmsKeyArn"], "{f}");
        assert!(
            kms.iam_condition.contains("secretsmanager."),
            "{f}: {}",
            kms.iam_condition
        );
    }
}

/// The operations resources agree with what the code emits: the loader may put events on the bus it is told; the
/// failure rule matches the `Run Failed` events of this stack and its message reads fields they have; each alarm
/// watches a metric the loader's EMF lines carry, with exactly their dimensions (CloudWatch does not aggregate across
/// dimensions); every opt-in resource hangs on its parameter.
#[test]
fn the_alarms_rules_and_permissions_match_the_events_and_metrics_the_loader_emits() {
    use crate::contract::events::{Common, RunFailed, RUN_FAILED, SOURCE};
    let t = Template::load();
    assert_eq!(
        t.env("LoaderFunction", "PGSHIFT_EVENT_BUS").as_deref(),
        Some("!Ref EventBusName")
    );
    assert_eq!(
        t.env("LoaderFunction", "PGSHIFT_STACK").as_deref(),
        Some("!Ref AWS::StackName")
    );
    assert_eq!(
        t.env("ExtractorFunction", "PGSHIFT_STACK").as_deref(),
        Some("!Ref AWS::StackName")
    );
    let put = t
        .statements("LoaderFunction")
        .into_iter()
        .find(|s| s.allows("events:PutEvents"))
        .expect("the loader may put events");
    assert_eq!(
        put.resources,
        ["!Sub arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/${EventBusName}"]
    );

    // The rule's pattern is the events' source, type and stack; its message's paths are fields of Run Failed.
    let rule = t.props("RunFailedRule");
    assert_eq!(text(&rule["EventBusName"]), "!Ref EventBusName");
    let pattern = &rule["EventPattern"];
    assert_eq!(list(&pattern["source"]), [SOURCE]);
    assert_eq!(list(&pattern["detail-type"]), [RUN_FAILED]);
    assert_eq!(list(&pattern["detail"]["stack"]), ["!Ref AWS::StackName"]);
    let sample = RunFailed {
        common: Common {
            version: 1,
            stack: "s".into(),
            run_id: "r".into(),
            stage: "s3://b".into(),
            report_url: "s3://b/r/report.html".into(),
            snapshot: None,
            data_as_of: String::new(),
            started_at: String::new(),
            ended_at: String::new(),
            seconds: 0.0,
        },
        error: "e".into(),
        message: "m".into(),
        failed_at: "w".into(),
        table: None,
        warehouse: "as it was".into(),
        resume: "again".into(),
        retryable: false,
    };
    let detail = serde_json::to_value(&sample).expect("json");
    let paths = &rule["Targets"][0]["InputTransformer"]["InputPathsMap"];
    for (_, path) in paths.as_mapping().expect("paths") {
        let field = text(path).strip_prefix("$.detail.").expect("a detail path").to_string();
        assert!(detail.get(&field).is_some(), "Run Failed has {field}");
    }
    let stopped = &t.props("ExecutionStoppedRule")["EventPattern"];
    assert_eq!(list(&stopped["detail"]["status"]), ["TIMED_OUT", "ABORTED"]);
    assert_eq!(list(&stopped["detail"]["stateMachineArn"]), ["!Ref Pipeline"]);

    // Each alarm: a Stack-only metric the run's EMF line carries.
    let stack_metrics: Vec<String> = {
        let rec_line = crate::report::metrics::emitted_at_stack();
        rec_line.into_iter().map(str::to_string).collect()
    };
    for (alarm, condition) in [
        ("FreshnessAlarm", "HasFreshnessAlarm"),
        ("RowDropAlarm", "HasRowDropAlarm"),
    ] {
        let p = t.props(alarm);
        assert_eq!(text(&t.resource(alarm)["Condition"]), condition);
        assert_eq!(text(&p["Namespace"]), crate::report::metrics::NAMESPACE);
        assert!(
            stack_metrics.contains(&text(&p["MetricName"])),
            "{alarm}: {}",
            text(&p["MetricName"])
        );
        let dims = p["Dimensions"].as_sequence().expect("dimensions");
        assert_eq!(dims.len(), 1, "{alarm}: exactly the line's dimensions");
        assert_eq!(
            (text(&dims[0]["Name"]), text(&dims[0]["Value"])),
            ("Stack".into(), "!Ref AWS::StackName".into())
        );
        assert_eq!(list(&p["AlarmActions"]), ["!Ref AlertsTopic"]);
    }
    for (r, condition) in [
        ("AlertsTopic", "Alerts"),
        ("AlertsTopicPolicy", "Alerts"),
        ("AlertsEmail", "HasAlarmEmail"),
        ("RunFailedRule", "Alerts"),
        ("ExecutionStoppedRule", "Alerts"),
        ("Dashboard", "WantsDashboard"),
    ] {
        assert_eq!(text(&t.resource(r)["Condition"]), condition, "{r}");
    }
}
