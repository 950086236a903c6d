//! `template.yaml` checked against the agents it deploys and the code that reads it.
//!
//! The least-privilege check reads every IAM role in the template and every
//! `functions/*/agent.toml`, and reports each SQS, EventBridge Scheduler or
//! `iam:PassRole` grant wider than the agent's definition allows: an agent consumes
//! only its own queue; sends only to itself, to the agents its `may_message` names, to
//! the agents that may message it (replies go back to the sender) and to its own DLQ;
//! schedules wake-ups only in its own group through its own wake-up role, which can
//! send only to that agent's queue (and the schedule DLQ). Any `*` in such a grant is
//! reported. The check's own tests feed it mutated templates and agent definitions,
//! so a check that stopped seeing would fail.
//!
//! The other tests pin what the code relies on (visibility ≥ 6 × function timeout,
//! max receives reaching the functions, message size, alarms, keys from SSM), and
//! `sam validate --lint` and `cfn-lint` run from a virtualenv installed under
//! `target/` once (`aos_aws::emulator::ensure_sam_cli`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos_kernel::AgentDef;
use serde_yaml::{Mapping, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn template_text() -> String {
    std::fs::read_to_string(root().join("template.yaml")).expect("reading template.yaml")
}

/// Every `functions/*/agent.toml`, by agent name.
fn agent_defs() -> BTreeMap<String, AgentDef> {
    let mut defs = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("functions")).expect("reading functions/") {
        let path = entry.unwrap().path().join("agent.toml");
        if path.is_file() {
            let text = std::fs::read_to_string(&path).unwrap();
            let def =
                AgentDef::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            defs.insert(def.name.as_str().to_string(), def);
        }
    }
    assert!(!defs.is_empty(), "no functions/*/agent.toml found");
    defs
}

// ------------------------------------------------------------------ template model

/// An intrinsic function in either spelling, `!Ref X` or `{Ref: X}`, `!GetAtt ..` or
/// `{Fn::GetAtt: ..}`: its name without `Fn::` and its argument.
fn intrinsic(v: &Value) -> Option<(String, &Value)> {
    match v {
        Value::Tagged(t) => Some((
            t.tag.to_string().trim_start_matches('!').to_string(),
            &t.value,
        )),
        Value::Mapping(m) if m.len() == 1 => {
            let (k, inner) = m.iter().next()?;
            let k = k.as_str()?;
            if k == "Ref" || k == "Condition" {
                Some((k.to_string(), inner))
            } else {
                k.strip_prefix("Fn::").map(|n| (n.to_string(), inner))
            }
        }
        _ => None,
    }
}

/// `(logical id, attribute)` of `!Ref X` (attribute "") or `!GetAtt X.Attr`.
fn reference(v: &Value) -> Option<(String, String)> {
    let (name, arg) = intrinsic(v)?;
    match name.as_str() {
        "Ref" => arg.as_str().map(|s| (s.to_string(), String::new())),
        "GetAtt" => match arg {
            Value::String(s) => s
                .split_once('.')
                .map(|(a, b)| (a.to_string(), b.to_string())),
            Value::Sequence(seq) if seq.len() == 2 => {
                Some((seq[0].as_str()?.to_string(), seq[1].as_str()?.to_string()))
            }
            _ => None,
        },
        _ => None,
    }
}

fn is_ref_to(v: &Value, id: &str) -> bool {
    reference(v).is_some_and(|(r, attr)| r == id && attr.is_empty())
}

/// The text of `!Sub 'text'` or `!Sub ['text', {..}]`.
fn sub_text(v: &Value) -> Option<&str> {
    let (name, arg) = intrinsic(v)?;
    if name != "Sub" {
        return None;
    }
    match arg {
        Value::String(s) => Some(s),
        Value::Sequence(seq) => seq.first()?.as_str(),
        _ => None,
    }
}

/// What a value can be: both branches of every `!If`, nothing for `AWS::NoValue`.
fn branches(v: &Value) -> Vec<&Value> {
    if let Some((name, arg)) = intrinsic(v) {
        if let ("If", Value::Sequence(seq)) = (name.as_str(), arg) {
            return seq.iter().skip(1).flat_map(branches).collect();
        }
        if name == "Ref" && arg.as_str() == Some("AWS::NoValue") {
            return Vec::new();
        }
    }
    vec![v]
}

/// The items a list (or a single value) can hold, through `!If`s at any level.
fn items(v: &Value) -> Vec<&Value> {
    branches(v)
        .into_iter()
        .flat_map(|b| match b {
            Value::Sequence(seq) => seq.iter().flat_map(branches).collect(),
            other => vec![other],
        })
        .collect()
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .replace('\n', " "),
    }
}

struct Template {
    doc: Value,
}

impl Template {
    fn parse(text: &str) -> Template {
        Template {
            doc: serde_yaml::from_str(text).expect("template.yaml is YAML"),
        }
    }

    fn resources(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.doc
            .get("Resources")
            .and_then(Value::as_mapping)
            .into_iter()
            .flat_map(Mapping::iter)
            .filter_map(|(k, v)| Some((k.as_str()?, v)))
    }

    fn resource(&self, id: &str) -> Option<&Value> {
        get(&self.doc, &["Resources", id])
    }

    fn type_of(&self, id: &str) -> Option<&str> {
        self.resource(id)?.get("Type")?.as_str()
    }

    fn of_type(&self, ty: &str) -> Vec<(&str, &Value)> {
        self.resources()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(ty))
            .collect()
    }

    fn prop<'a>(&'a self, id: &str, path: &[&str]) -> Option<&'a Value> {
        get(self.resource(id)?.get("Properties")?, path)
    }

    /// A function's property, else the one in `Globals.Function`.
    fn function_prop<'a>(&'a self, id: &str, key: &str) -> Option<&'a Value> {
        self.prop(id, &[key])
            .or_else(|| get(&self.doc, &["Globals", "Function", key]))
    }

    /// A function's environment: `Globals.Function` merged with its own, as SAM does.
    fn env(&self, id: &str) -> BTreeMap<String, Value> {
        let mut env = BTreeMap::new();
        for vars in [
            get(
                &self.doc,
                &["Globals", "Function", "Environment", "Variables"],
            ),
            self.prop(id, &["Environment", "Variables"]),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(m) = vars.as_mapping() {
                for (k, v) in m {
                    env.insert(k.as_str().unwrap_or_default().to_string(), v.clone());
                }
            }
        }
        env
    }

    fn parameter_default(&self, name: &str) -> Option<&Value> {
        get(&self.doc, &["Parameters", name, "Default"])
    }

    fn functions(&self) -> Vec<&str> {
        self.of_type("AWS::Serverless::Function")
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// The logical id a `!GetAtt X.Arn` points at, when X is of type `ty`.
    fn arn_of_type(&self, v: &Value, ty: &str) -> Option<String> {
        let (id, attr) = reference(v)?;
        (attr == "Arn" && self.type_of(&id) == Some(ty)).then_some(id)
    }

    /// The logical id of `!GetAtt X.QueueName` or `!GetAtt X.Arn` for a queue X.
    fn queue_of(&self, v: &Value) -> Option<String> {
        let (id, attr) = reference(v)?;
        ((attr == "Arn" || attr == "QueueName") && self.type_of(&id) == Some("AWS::SQS::Queue"))
            .then_some(id)
    }
}

/// What an IAM statement's resource stands for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// An SQS queue of this template, by logical id.
    Queue(String),
    /// Every schedule in one schedule group of this template.
    ScheduleGroup(String),
    /// An IAM role of this template.
    Role(String),
    /// Anything else, as written.
    Other(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Queue(q) => write!(f, "queue {q}"),
            Target::ScheduleGroup(g) => write!(f, "schedules in group {g}"),
            Target::Role(r) => write!(f, "role {r}"),
            Target::Other(s) => write!(f, "{s:?}"),
        }
    }
}

fn target(t: &Template, v: &Value) -> Target {
    if let Some(q) = t.arn_of_type(v, "AWS::SQS::Queue") {
        return Target::Queue(q);
    }
    if let Some(r) = t.arn_of_type(v, "AWS::IAM::Role") {
        return Target::Role(r);
    }
    if let Some(text) = sub_text(v) {
        // The one `${Name}` between a prefix and a suffix, when it is all there is.
        let inner = |prefix: &str, suffix: &str| {
            text.strip_prefix(prefix)?
                .strip_suffix(suffix)?
                .strip_prefix("${")?
                .strip_suffix('}')
                .filter(|n| !n.contains(['$', '{', '}', '*', '/']))
                .map(str::to_string)
        };
        let of_type = |id: Option<String>, ty: &str| id.filter(|id| t.type_of(id) == Some(ty));
        let sqs = "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:";
        let by_name = inner(sqs, "").and_then(|n| n.strip_suffix(".QueueName").map(String::from));
        let by_arn = inner("", "").and_then(|n| n.strip_suffix(".Arn").map(String::from));
        if let Some(q) = of_type(by_name.or(by_arn), "AWS::SQS::Queue") {
            return Target::Queue(q);
        }
        let schedules =
            "arn:${AWS::Partition}:scheduler:${AWS::Region}:${AWS::AccountId}:schedule/";
        if let Some(g) = of_type(inner(schedules, "/*"), "AWS::Scheduler::ScheduleGroup") {
            return Target::ScheduleGroup(g);
        }
    }
    Target::Other(show(v))
}

/// One allowed (action, resource) pair of a role.
#[derive(Clone, Debug)]
struct Grant {
    sid: String,
    /// Lower case, as IAM compares actions.
    action: String,
    target: Target,
}

/// The statements of a role's inline policies and of the policies attached to it.
fn role_statements<'a>(t: &'a Template, role: &str) -> Vec<&'a Value> {
    let mut docs: Vec<&Value> = t
        .prop(role, &["Policies"])
        .map(items)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.get("PolicyDocument"))
        .collect();
    for (_, r) in t.resources() {
        let ty = r.get("Type").and_then(Value::as_str).unwrap_or_default();
        let props = r.get("Properties");
        let attached = match ty {
            "AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy" => props
                .and_then(|p| p.get("Roles"))
                .map(items)
                .unwrap_or_default()
                .into_iter()
                .any(|v| is_ref_to(v, role)),
            "AWS::IAM::RolePolicy" => props
                .and_then(|p| p.get("RoleName"))
                .is_some_and(|v| is_ref_to(v, role)),
            _ => false,
        };
        if attached {
            docs.extend(props.and_then(|p| p.get("PolicyDocument")));
        }
    }
    docs.into_iter()
        .flat_map(branches)
        .filter_map(|d| d.get("Statement"))
        .flat_map(items)
        .collect()
}

/// Whether an action is one this check judges: SQS, Scheduler, `iam:PassRole`, or a
/// wildcard that could stand for one of them.
fn judged(action: &str) -> bool {
    let service = action.split_once(':').map_or(action, |(s, _)| s);
    service.contains('*')
        || matches!(service, "sqs" | "scheduler")
        || (service == "iam" && action.contains('*'))
        || action == "iam:passrole"
}

/// The grants of a role this check judges; what cannot be judged is a problem.
fn grants(t: &Template, role: &str, problems: &mut Vec<String>) -> Vec<Grant> {
    if t.prop(role, &["ManagedPolicyArns"])
        .is_some_and(|v| !items(v).is_empty())
    {
        problems.push(format!(
            "{role}: has ManagedPolicyArns; a managed policy's grants cannot be checked here"
        ));
    }
    let mut out = Vec::new();
    for (i, st) in role_statements(t, role).into_iter().enumerate() {
        let sid = st
            .get("Sid")
            .and_then(Value::as_str)
            .map_or_else(|| format!("#{i}"), str::to_string);
        if st.get("Effect").and_then(Value::as_str) == Some("Deny") {
            continue;
        }
        for not in ["NotAction", "NotResource"] {
            if st.get(not).is_some() {
                problems.push(format!(
                    "{role} statement {sid}: an Allow with {not} grants everything it does not name"
                ));
            }
        }
        let actions: Vec<String> = st
            .get("Action")
            .map(items)
            .unwrap_or_default()
            .into_iter()
            .map(|a| show(a).to_ascii_lowercase())
            .filter(|a| judged(a))
            .collect();
        let resources: Vec<Target> = st
            .get("Resource")
            .map(items)
            .unwrap_or_default()
            .into_iter()
            .map(|r| target(t, r))
            .collect();
        for action in actions {
            if action.contains('*') {
                problems.push(format!(
                    "{role} statement {sid}: wildcard action {action:?}"
                ));
                continue;
            }
            for target in &resources {
                out.push(Grant {
                    sid: sid.clone(),
                    action: action.clone(),
                    target: target.clone(),
                });
            }
        }
    }
    out
}

/// An agent's resources, found through its function.
#[derive(Clone, Debug, Default)]
struct AgentResources {
    function: String,
    role: String,
    queue: String,
    dlq: String,
    group: String,
    wakeup_role: String,
}

/// Which agent each function serves and the resources it uses; problems on the way.
fn agent_resources(
    t: &Template,
    defs: &BTreeMap<String, AgentDef>,
    problems: &mut Vec<String>,
) -> BTreeMap<String, AgentResources> {
    let mut agents: BTreeMap<String, AgentResources> = BTreeMap::new();
    for f in t.functions() {
        let env = t.env(f);
        let Some(agent) = env.get("AOS_AGENT").and_then(Value::as_str) else {
            continue;
        };
        let mut a = AgentResources {
            function: f.to_string(),
            ..Default::default()
        };
        // A missing role is reported with every function's, in least_privilege.
        if let Some(role) = t
            .prop(f, &["Role"])
            .and_then(|r| t.arn_of_type(r, "AWS::IAM::Role"))
        {
            a.role = role;
        }
        let sqs_events: Vec<&Value> = t
            .prop(f, &["Events"])
            .and_then(Value::as_mapping)
            .into_iter()
            .flat_map(Mapping::values)
            .filter(|e| e.get("Type").and_then(Value::as_str) == Some("SQS"))
            .collect();
        match sqs_events.as_slice() {
            [e] => match get(e, &["Properties", "Queue"]).and_then(|q| t.queue_of(q)) {
                Some(q) => a.queue = q,
                None => problems.push(format!(
                    "{f}: its SQS event names no queue of this template"
                )),
            },
            _ => problems.push(format!(
                "{f}: agent {agent} needs exactly one SQS event (its mailbox), has {}",
                sqs_events.len()
            )),
        }
        if !a.queue.is_empty() {
            match t
                .prop(&a.queue, &["RedrivePolicy", "deadLetterTargetArn"])
                .and_then(|d| t.queue_of(d))
            {
                Some(dlq) => a.dlq = dlq,
                None => problems.push(format!("{}: no dead-letter queue", a.queue)),
            }
            let var = format!("AOS_QUEUE_URL_{}", agent.to_uppercase().replace('-', "_"));
            if !env.get(&var).is_some_and(|v| is_ref_to(v, &a.queue)) {
                problems.push(format!("{f}: {var} is not !Ref {}", a.queue));
            }
        }
        if !a.dlq.is_empty() && !env.get("AOS_DLQ_URL").is_some_and(|v| is_ref_to(v, &a.dlq)) {
            problems.push(format!("{f}: AOS_DLQ_URL is not !Ref {}", a.dlq));
        }
        match env.get("AOS_SCHEDULE_GROUP").and_then(reference) {
            Some((g, attr))
                if attr.is_empty() && t.type_of(&g) == Some("AWS::Scheduler::ScheduleGroup") =>
            {
                a.group = g
            }
            _ => problems.push(format!(
                "{f}: AOS_SCHEDULE_GROUP is not !Ref to a schedule group of this template"
            )),
        }
        match env
            .get("AOS_SCHEDULER_ROLE_ARN")
            .and_then(|v| t.arn_of_type(v, "AWS::IAM::Role"))
        {
            Some(r) => a.wakeup_role = r,
            None => problems.push(format!(
                "{f}: AOS_SCHEDULER_ROLE_ARN is not the ARN of a role of this template"
            )),
        }
        if agents.insert(agent.to_string(), a).is_some() {
            problems.push(format!("agent {agent} has two functions"));
        }
    }
    let deployed: BTreeSet<&String> = agents.keys().collect();
    let defined: BTreeSet<&String> = defs.keys().collect();
    if deployed != defined {
        problems.push(format!(
            "agents with a function {deployed:?} differ from functions/*/agent.toml {defined:?}"
        ));
    }
    let mut seen = BTreeMap::new();
    for (agent, a) in &agents {
        for (what, id) in [
            ("queue", &a.queue),
            ("DLQ", &a.dlq),
            ("schedule group", &a.group),
            ("wake-up role", &a.wakeup_role),
            ("role", &a.role),
        ] {
            if id.is_empty() {
                continue;
            }
            if let Some(other) = seen.insert(id.clone(), agent.clone()) {
                problems.push(format!("agents {other} and {agent} share the {what} {id}"));
            }
        }
    }
    agents
}

/// Queues EventBridge Scheduler dead-letters to: the `DeadLetterConfig` of every
/// schedule (SAM `ScheduleV2` events and `AWS::Scheduler::Schedule`).
fn schedule_dlqs(t: &Template) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in t.functions() {
        for e in t
            .prop(f, &["Events"])
            .and_then(Value::as_mapping)
            .into_iter()
            .flat_map(Mapping::values)
        {
            if e.get("Type").and_then(Value::as_str) == Some("ScheduleV2") {
                out.extend(
                    get(e, &["Properties", "DeadLetterConfig", "Arn"]).and_then(|q| t.queue_of(q)),
                );
            }
        }
    }
    for (id, _) in t.of_type("AWS::Scheduler::Schedule") {
        out.extend(
            t.prop(id, &["Target", "DeadLetterConfig", "Arn"])
                .and_then(|q| t.queue_of(q)),
        );
    }
    out
}

const CONSUME: [&str; 4] = [
    "sqs:receivemessage",
    "sqs:deletemessage",
    "sqs:changemessagevisibility",
    "sqs:getqueueattributes",
];

/// Every SQS, Scheduler and PassRole grant in the template that is wider than the
/// agents' definitions allow, and every shape this check cannot vouch for. Empty
/// means least privilege.
fn least_privilege(t: &Template, defs: &BTreeMap<String, AgentDef>) -> Vec<String> {
    let mut problems = Vec::new();
    let agents = agent_resources(t, defs, &mut problems);
    let schedule_dlqs = schedule_dlqs(t);
    let agent_queues: BTreeSet<&str> = agents.values().map(|a| a.queue.as_str()).collect();
    let agent_dlqs: BTreeSet<&str> = agents.values().map(|a| a.dlq.as_str()).collect();
    let queue_of = |agent: &str| agents.get(agent).map(|a| a.queue.clone());
    let agent_groups: BTreeSet<&str> = agents.values().map(|a| a.group.as_str()).collect();
    // A role EventBridge Scheduler assumes only for schedules of a group that is no
    // agent's (the API's task schedules), which the API may pass.
    let task_schedule_role = |role: &str| {
        let trust = t
            .prop(role, &["AssumeRolePolicyDocument", "Statement"])
            .map(items)
            .unwrap_or_default();
        !trust.is_empty()
            && trust.iter().all(|st| {
                get(st, &["Principal", "Service"]).and_then(Value::as_str)
                    == Some("scheduler.amazonaws.com")
                    && get(st, &["Condition", "ArnLike", "aws:SourceArn"])
                        .and_then(|v| t.arn_of_type(v, "AWS::Scheduler::ScheduleGroup"))
                        .is_some_and(|g| !agent_groups.contains(g.as_str()))
            })
    };

    // Every function: its own explicit role, no SAM policy templates.
    let mut role_owner: BTreeMap<String, String> = BTreeMap::new();
    for f in t.functions() {
        if t.prop(f, &["Policies"]).is_some() {
            problems.push(format!(
                "{f}: has SAM Policies; give it only its explicit Role (SAM adds managed policies to generated roles)"
            ));
        }
        match t
            .prop(f, &["Role"])
            .and_then(|r| t.arn_of_type(r, "AWS::IAM::Role"))
        {
            Some(role) => {
                if let Some(other) = role_owner.insert(role.clone(), f.to_string()) {
                    problems.push(format!("{other} and {f} share the role {role}"));
                }
            }
            None => problems.push(format!(
                "{f}: no explicit Role of this template (SAM would generate one)"
            )),
        }
    }

    for (role, _) in t.of_type("AWS::IAM::Role") {
        let agent_fn = agents.iter().find(|(_, a)| a.role == role);
        let wakeup_of = agents.iter().find(|(_, a)| a.wakeup_role == role);
        for g in grants(t, role, &mut problems) {
            let what = format!("{role} statement {}: {} on {}", g.sid, g.action, g.target);
            // ListSchedules takes no resource but "*": it lists names, and reading a
            // schedule needs GetSchedule, which is judged.
            if g.action == "scheduler:listschedules"
                && matches!(&g.target, Target::Other(s) if s == "*")
            {
                continue;
            }
            if let Target::Other(s) = &g.target {
                let why = if s.contains('*') {
                    "a wildcard resource"
                } else {
                    "not a resource of this template"
                };
                problems.push(format!("{what}: {why}"));
                continue;
            }
            let allowed = match (agent_fn, wakeup_of) {
                (Some(_), Some(_)) => {
                    problems.push(format!(
                        "{role}: both an agent's function role and a wake-up role"
                    ));
                    continue;
                }
                (Some((agent, a)), None) => {
                    let def = &defs.get(agent.as_str());
                    let peers: Vec<String> = def
                        .map(|d| {
                            d.may_message
                                .iter()
                                .map(|p| p.as_str().to_string())
                                .collect()
                        })
                        .unwrap_or_default();
                    let senders: Vec<String> = defs
                        .values()
                        .filter(|d| d.may_message.iter().any(|p| p.as_str() == agent))
                        .map(|d| d.name.as_str().to_string())
                        .collect();
                    match g.action.as_str() {
                        "sqs:sendmessage" => {
                            let ok: BTreeSet<Target> = std::iter::once(a.queue.clone())
                                .chain(peers.iter().filter_map(|p| queue_of(p)))
                                .chain(senders.iter().filter_map(|s| queue_of(s)))
                                .chain(std::iter::once(a.dlq.clone()))
                                .map(Target::Queue)
                                .collect();
                            ok.contains(&g.target).then_some(()).ok_or_else(|| {
                                format!(
                                    "agent {agent} may send only to its own queue {}, its DLQ {}, the queues of may_message {peers:?} and of the agents that may message it {senders:?}",
                                    a.queue, a.dlq
                                )
                            })
                        }
                        action if CONSUME.contains(&action) => (g.target
                            == Target::Queue(a.queue.clone()))
                        .then_some(())
                        .ok_or_else(|| {
                            format!("agent {agent} may consume only its own queue {}", a.queue)
                        }),
                        "scheduler:createschedule" => (g.target
                            == Target::ScheduleGroup(a.group.clone()))
                        .then_some(())
                        .ok_or_else(|| {
                            format!(
                                "agent {agent} may schedule only in its own group {}",
                                a.group
                            )
                        }),
                        "iam:passrole" => (g.target == Target::Role(a.wakeup_role.clone()))
                            .then_some(())
                            .ok_or_else(|| {
                                format!(
                                    "agent {agent} may pass only its own wake-up role {}",
                                    a.wakeup_role
                                )
                            }),
                        _ => Err(format!("agent {agent} needs no {}", g.action)),
                    }
                }
                (None, Some((agent, a))) => {
                    let ok = g.action == "sqs:sendmessage"
                        && (g.target == Target::Queue(a.queue.clone())
                            || matches!(&g.target, Target::Queue(q) if schedule_dlqs.contains(q)));
                    ok.then_some(()).ok_or_else(|| {
                        format!(
                            "agent {agent}'s wake-up role may only send to its queue {} (and the schedule DLQ)",
                            a.queue
                        )
                    })
                }
                (None, None) => {
                    let queue = match &g.target {
                        Target::Queue(q) => q.as_str(),
                        _ => "",
                    };
                    match g.action.as_str() {
                        "sqs:sendmessage"
                            if agent_queues.contains(queue) || schedule_dlqs.contains(queue) =>
                        {
                            Ok(())
                        }
                        "sqs:getqueueattributes"
                            if agent_queues.contains(queue) || agent_dlqs.contains(queue) =>
                        {
                            Ok(())
                        }
                        "sqs:receivemessage" | "sqs:changemessagevisibility" | "sqs:deletemessage"
                            if agent_dlqs.contains(queue) =>
                        {
                            Ok(())
                        }
                        "scheduler:createschedule" | "scheduler:getschedule" | "scheduler:deleteschedule"
                            if matches!(&g.target, Target::ScheduleGroup(grp) if !agent_groups.contains(grp.as_str())) =>
                        {
                            Ok(())
                        }
                        "iam:passrole"
                            if matches!(&g.target, Target::Role(r) if task_schedule_role(r)) =>
                        {
                            Ok(())
                        }
                        _ => Err("a role that serves no agent may submit to agent queues, read queue depths, peek at and redrive dead letters, and manage task schedules in a group that is no agent's, passing only a role Scheduler assumes for that group; nothing more".to_string()),
                    }
                }
            };
            if let Err(why) = allowed {
                problems.push(format!("{what}: {why}"));
            }
        }
    }

    // A wake-up role is assumed by Scheduler for its agent's group only.
    for (agent, a) in &agents {
        if a.wakeup_role.is_empty() || a.group.is_empty() {
            continue;
        }
        let trust = t
            .prop(&a.wakeup_role, &["AssumeRolePolicyDocument", "Statement"])
            .map(items)
            .unwrap_or_default();
        let scoped = !trust.is_empty()
            && trust.iter().all(|st| {
                get(st, &["Principal", "Service"]).and_then(Value::as_str)
                    == Some("scheduler.amazonaws.com")
                    && get(st, &["Condition", "ArnLike", "aws:SourceArn"])
                        .and_then(|v| t.arn_of_type(v, "AWS::Scheduler::ScheduleGroup"))
                        .is_some_and(|g| g == a.group)
            });
        if !scoped {
            problems.push(format!(
                "{}: agent {agent}'s wake-up role must trust only scheduler.amazonaws.com from its group {}",
                a.wakeup_role, a.group
            ));
        }
    }
    problems
}

fn assert_least_privilege(t: &Template, defs: &BTreeMap<String, AgentDef>) {
    let problems = least_privilege(t, defs);
    assert!(
        problems.is_empty(),
        "least privilege violated:\n  {}",
        problems.join("\n  ")
    );
}

// ------------------------------------------------------------------ least privilege

#[test]
fn every_grant_is_the_least_the_agents_need() {
    let t = Template::parse(&template_text());
    let defs = agent_defs();
    assert_least_privilege(&t, &defs);
    // The check judged something: every agent's mailbox, sends and wake-ups.
    let mut none = Vec::new();
    let agents = agent_resources(&t, &defs, &mut none);
    for (agent, a) in &agents {
        let g = grants(&t, &a.role, &mut none);
        for action in [
            "sqs:receivemessage",
            "sqs:sendmessage",
            "scheduler:createschedule",
        ] {
            assert!(
                g.iter().any(|g| g.action == action),
                "agent {agent}'s role {} has no {action}",
                a.role
            );
        }
    }
    assert!(none.is_empty(), "{none:?}");
}

/// The real template, changed through its YAML tree and written back to text.
fn mutated(change: impl FnOnce(&mut Value)) -> Template {
    let mut doc: Value = serde_yaml::from_str(&template_text()).unwrap();
    change(&mut doc);
    Template::parse(&serde_yaml::to_string(&doc).unwrap())
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}

/// The statement `sid` of the first inline policy of `role` that has it.
fn statement<'a>(doc: &'a mut Value, role: &str, sid: &str) -> &'a mut Value {
    let policies = doc
        .get_mut("Resources")
        .and_then(|r| r.get_mut(role))
        .and_then(|r| r.get_mut("Properties"))
        .and_then(|p| p.get_mut("Policies"))
        .and_then(Value::as_sequence_mut)
        .unwrap_or_else(|| panic!("{role} has no Policies"));
    policies
        .iter_mut()
        .filter_map(|p| p.get_mut("PolicyDocument"))
        .filter_map(|d| d.get_mut("Statement"))
        .filter_map(Value::as_sequence_mut)
        .flat_map(|s| s.iter_mut())
        .find(|s| s.get("Sid").and_then(Value::as_str) == Some(sid))
        .unwrap_or_else(|| panic!("{role} has no statement {sid}"))
}

fn push_resource(st: &mut Value, resource: Value) {
    let r = st.get_mut("Resource").unwrap();
    match r {
        Value::Sequence(seq) => seq.push(resource),
        other => *other = Value::Sequence(vec![other.clone(), resource]),
    }
}

fn assert_reported(t: &Template, defs: &BTreeMap<String, AgentDef>, needles: &[&str]) {
    let problems = least_privilege(t, defs);
    assert!(
        problems
            .iter()
            .any(|p| needles.iter().all(|n| p.contains(n))),
        "expected a problem mentioning {needles:?}, got {problems:#?}"
    );
}

#[test]
fn a_send_to_an_agent_not_in_may_message_is_reported() {
    let t = mutated(|doc| {
        push_resource(
            statement(doc, "WeatherFunctionRole", "Send"),
            yaml("!GetAtt FinanceQueue.Arn"),
        )
    });
    assert_reported(
        &t,
        &agent_defs(),
        &["WeatherFunctionRole", "FinanceQueue", "may_message"],
    );
}

#[test]
fn taking_a_peer_out_of_may_message_makes_the_template_too_wide() {
    let mut defs = agent_defs();
    let primary = defs.get_mut("primary").unwrap();
    primary.may_message.retain(|p| p.as_str() != "finance");
    let t = Template::parse(&template_text());
    // primary may no longer send to finance, nor finance reply to primary.
    assert_reported(&t, &defs, &["PrimaryFunctionRole", "FinanceQueue"]);
    assert_reported(&t, &defs, &["FinanceFunctionRole", "PrimaryQueue"]);
}

#[test]
fn a_wildcard_resource_or_action_is_reported() {
    let star = mutated(|doc| {
        *statement(doc, "PrimaryFunctionRole", "DeadLetters")
            .get_mut("Resource")
            .unwrap() = Value::String("*".into());
    });
    assert_reported(
        &star,
        &agent_defs(),
        &["PrimaryFunctionRole", "wildcard resource"],
    );
    let arn_star = mutated(|doc| {
        *statement(doc, "ApiFunctionRole", "SubmitTasks")
            .get_mut("Resource")
            .unwrap() = yaml("!Sub 'arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:*'");
    });
    assert_reported(
        &arn_star,
        &agent_defs(),
        &["ApiFunctionRole", "wildcard resource"],
    );
    let action = mutated(|doc| {
        *statement(doc, "WeatherFunctionRole", "Mailbox")
            .get_mut("Action")
            .unwrap() = Value::String("sqs:*".into());
    });
    assert_reported(
        &action,
        &agent_defs(),
        &["WeatherFunctionRole", "wildcard action"],
    );
    let schedules = mutated(|doc| {
        *statement(doc, "FinanceFunctionRole", "Wakeups")
            .get_mut("Resource")
            .unwrap() = Value::String("*".into());
    });
    assert_reported(
        &schedules,
        &agent_defs(),
        &["FinanceFunctionRole", "scheduler:createschedule"],
    );
}

#[test]
fn the_api_manages_task_schedules_only_in_their_own_group_and_passes_only_their_role() {
    let in_agent_group = mutated(|doc| {
        *statement(doc, "ApiFunctionRole", "TaskSchedules")
            .get_mut("Resource")
            .unwrap() = yaml(
            "!Sub 'arn:${AWS::Partition}:scheduler:${AWS::Region}:${AWS::AccountId}:schedule/${PrimaryScheduleGroup}/*'",
        );
    });
    assert_reported(
        &in_agent_group,
        &agent_defs(),
        &["ApiFunctionRole", "TaskSchedules", "PrimaryScheduleGroup"],
    );
    let wakeup_role = mutated(|doc| {
        *statement(doc, "ApiFunctionRole", "PassTaskScheduleRole")
            .get_mut("Resource")
            .unwrap() = yaml("!GetAtt PrimaryWakeupRole.Arn");
    });
    assert_reported(
        &wakeup_role,
        &agent_defs(),
        &["ApiFunctionRole", "iam:passrole", "PrimaryWakeupRole"],
    );
    let everywhere = mutated(|doc| {
        *statement(doc, "ApiFunctionRole", "TaskSchedules")
            .get_mut("Resource")
            .unwrap() = Value::String("*".into());
    });
    assert_reported(
        &everywhere,
        &agent_defs(),
        &["ApiFunctionRole", "wildcard resource"],
    );
    // The role the API passes is assumed only for schedules of the task group.
    let t = Template::parse(&template_text());
    let env = t.env("ApiFunction");
    let role = env
        .get("AOS_TASK_SCHEDULE_ROLE_ARN")
        .and_then(|v| t.arn_of_type(v, "AWS::IAM::Role"))
        .expect("AOS_TASK_SCHEDULE_ROLE_ARN is a role of this template");
    let group = env
        .get("AOS_TASK_SCHEDULE_GROUP")
        .and_then(reference)
        .map(|(g, _)| g)
        .expect("AOS_TASK_SCHEDULE_GROUP is a !Ref");
    let source = t
        .prop(&role, &["AssumeRolePolicyDocument", "Statement"])
        .map(items)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|st| get(st, &["Condition", "ArnLike", "aws:SourceArn"]))
        .filter_map(|v| t.arn_of_type(v, "AWS::Scheduler::ScheduleGroup"))
        .collect::<Vec<_>>();
    assert_eq!(source, vec![group]);
    assert!(
        env.get("AOS_SCHEDULER_FUNCTION_ARN")
            .and_then(|v| t.arn_of_type(v, "AWS::Serverless::Function"))
            .is_some_and(|f| f == "SchedulerFunction")
    );
}

#[test]
fn the_api_routes_are_under_v1_behind_the_jwt_authorizer_but_health_and_openapi() {
    let t = Template::parse(&template_text());
    let api = t.of_type("AWS::Serverless::HttpApi");
    assert_eq!(api.len(), 1);
    let auth = get(api[0].1, &["Properties", "Auth"]).unwrap();
    let authorizer = get(auth, &["DefaultAuthorizer"])
        .and_then(Value::as_str)
        .unwrap();
    let jwt = get(auth, &["Authorizers", authorizer]).unwrap();
    assert_eq!(
        get(jwt, &["IdentitySource"]).and_then(Value::as_str),
        Some("$request.header.Authorization")
    );
    assert!(get(jwt, &["JwtConfiguration", "issuer"]).is_some_and(|v| is_ref_to(v, "JwtIssuer")));
    let mut open = BTreeSet::new();
    let mut guarded = BTreeSet::new();
    for (_, e) in t
        .prop("ApiFunction", &["Events"])
        .and_then(Value::as_mapping)
        .unwrap()
    {
        let path = get(e, &["Properties", "Path"])
            .and_then(Value::as_str)
            .unwrap();
        let method = get(e, &["Properties", "Method"])
            .and_then(Value::as_str)
            .unwrap();
        let none =
            get(e, &["Properties", "Auth", "Authorizer"]).and_then(Value::as_str) == Some("NONE");
        let route = format!("{method} {path}");
        if none {
            open.insert(route)
        } else {
            guarded.insert(route)
        };
    }
    assert_eq!(
        open,
        BTreeSet::from([
            "GET /".into(),
            "GET /assets/{file}".into(),
            "GET /v1/health".into(),
            "GET /v1/openapi.json".into()
        ])
    );
    assert_eq!(guarded, BTreeSet::from(["ANY /v1/{proxy+}".to_string()]));
}

#[test]
fn consuming_another_agents_queue_is_reported() {
    let t = mutated(|doc| {
        push_resource(
            statement(doc, "PrimaryFunctionRole", "Mailbox"),
            yaml("!GetAtt WeatherQueue.Arn"),
        )
    });
    assert_reported(
        &t,
        &agent_defs(),
        &["PrimaryFunctionRole", "WeatherQueue", "consume only"],
    );
    let api = mutated(|doc| {
        *statement(doc, "ApiFunctionRole", "PeekDeadLetters")
            .get_mut("Resource")
            .unwrap() = yaml("!GetAtt PrimaryQueue.Arn");
    });
    assert_reported(
        &api,
        &agent_defs(),
        &["ApiFunctionRole", "PrimaryQueue", "serves no agent"],
    );
}

#[test]
fn a_wake_up_role_reaching_another_queue_is_reported() {
    let t = mutated(|doc| {
        push_resource(
            statement(doc, "WeatherWakeupRole", "OwnQueue"),
            yaml("!GetAtt PrimaryQueue.Arn"),
        )
    });
    assert_reported(
        &t,
        &agent_defs(),
        &["WeatherWakeupRole", "PrimaryQueue", "wake-up role"],
    );
    // An agent passing another agent's wake-up role could schedule into its queue.
    let pass = mutated(|doc| {
        *statement(doc, "PrimaryFunctionRole", "PassWakeupRole")
            .get_mut("Resource")
            .unwrap() = yaml("!GetAtt FinanceWakeupRole.Arn");
    });
    assert_reported(
        &pass,
        &agent_defs(),
        &["PrimaryFunctionRole", "FinanceWakeupRole"],
    );
}

#[test]
fn a_function_without_its_own_role_is_reported() {
    let t = mutated(|doc| {
        let props = doc
            .get_mut("Resources")
            .and_then(|r| r.get_mut("WeatherFunction"))
            .and_then(|f| f.get_mut("Properties"))
            .and_then(Value::as_mapping_mut)
            .unwrap();
        props.remove("Role");
        props.insert(
            "Policies".into(),
            yaml("[{SQSPollerPolicy: {QueueName: !GetAtt WeatherQueue.QueueName}}]"),
        );
    });
    let problems = least_privilege(&t, &agent_defs());
    assert!(
        problems
            .iter()
            .any(|p| p.contains("WeatherFunction: has SAM Policies"))
            && problems
                .iter()
                .any(|p| p.contains("WeatherFunction: no explicit Role")),
        "{problems:#?}"
    );
}

/// A whole template written from scratch: the check needs no names of ours.
#[test]
fn a_small_template_with_a_star_is_reported() {
    let text = r#"
Resources:
  AQueue: { Type: AWS::SQS::Queue, Properties: { FifoQueue: true, RedrivePolicy: { deadLetterTargetArn: !GetAtt ADLQ.Arn, maxReceiveCount: 5 } } }
  ADLQ: { Type: AWS::SQS::Queue, Properties: { FifoQueue: true } }
  AGroup: { Type: AWS::Scheduler::ScheduleGroup }
  AWake:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Statement: [{ Effect: Allow, Principal: { Service: scheduler.amazonaws.com }, Action: sts:AssumeRole, Condition: { ArnLike: { aws:SourceArn: !GetAtt AGroup.Arn } } }]
  ARole:
    Type: AWS::IAM::Role
    Properties:
      Policies:
        - PolicyName: a
          PolicyDocument:
            Statement:
              - { Sid: Mailbox, Effect: Allow, Action: [sqs:ReceiveMessage], Resource: !GetAtt AQueue.Arn }
              - { Sid: Send, Effect: Allow, Action: sqs:SendMessage, Resource: '*' }
  AFunction:
    Type: AWS::Serverless::Function
    Properties:
      Role: !GetAtt ARole.Arn
      Environment: { Variables: { AOS_AGENT: a, AOS_QUEUE_URL_A: !Ref AQueue, AOS_DLQ_URL: !Ref ADLQ, AOS_SCHEDULE_GROUP: !Ref AGroup, AOS_SCHEDULER_ROLE_ARN: !GetAtt AWake.Arn } }
      Events: { Mailbox: { Type: SQS, Properties: { Queue: !GetAtt AQueue.Arn } } }
"#;
    let defs = BTreeMap::from([(
        "a".to_string(),
        AgentDef::from_toml("name='a'\npurpose='p'\nsystem_prompt='s'\n").unwrap(),
    )]);
    let problems = least_privilege(&Template::parse(text), &defs);
    assert_eq!(
        problems,
        vec![r#"ARole statement Send: sqs:sendmessage on "*": a wildcard resource"#.to_string()]
    );
    let fixed = text.replace("Resource: '*'", "Resource: !GetAtt AQueue.Arn");
    assert_eq!(
        least_privilege(&Template::parse(&fixed), &defs),
        Vec::<String>::new()
    );
}

// ------------------------------------------------------------------ timeouts, receives, sizes

fn number(v: Option<&Value>) -> u64 {
    let v = v.expect("a value");
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("{v:?} is not a number"))
}

fn allowed_numbers(t: &Template, param: &str) -> Vec<u64> {
    get(&t.doc, &["Parameters", param, "AllowedValues"])
        .and_then(Value::as_sequence)
        .unwrap_or_else(|| panic!("parameter {param} lists no AllowedValues"))
        .iter()
        .map(|v| number(Some(v)))
        .collect()
}

/// The value of a `Rules` condition function for some parameter values.
#[derive(Debug, PartialEq)]
enum Ev {
    Bool(bool),
    Str(String),
    List(Vec<String>),
}

fn eval(v: &Value, params: &BTreeMap<&str, String>) -> Ev {
    let args = |arg: &Value| -> Vec<Ev> {
        arg.as_sequence()
            .expect("a list of arguments")
            .iter()
            .map(|a| eval(a, params))
            .collect()
    };
    let truth = |e: &Ev| match e {
        Ev::Bool(b) => *b,
        other => panic!("{other:?} is not a condition"),
    };
    if let Some((name, arg)) = intrinsic(v) {
        return match name.as_str() {
            "Ref" => Ev::Str(params[arg.as_str().unwrap()].clone()),
            "Equals" => {
                let a = args(arg);
                Ev::Bool(a[0] == a[1])
            }
            "Not" => Ev::Bool(!truth(&args(arg)[0])),
            "Or" => Ev::Bool(args(arg).iter().any(truth)),
            "And" => Ev::Bool(args(arg).iter().all(truth)),
            "Contains" => match args(arg).as_slice() {
                [Ev::List(list), Ev::Str(x)] => Ev::Bool(list.contains(x)),
                other => panic!("Contains of {other:?}"),
            },
            other => panic!("rule function {other} is not evaluated here"),
        };
    }
    match v {
        Value::Sequence(seq) => Ev::List(
            seq.iter()
                .map(|x| match eval(x, params) {
                    Ev::Str(s) => s,
                    other => panic!("{other:?} in a list"),
                })
                .collect(),
        ),
        Value::String(s) => Ev::Str(s.clone()),
        Value::Number(n) => Ev::Str(n.to_string()),
        other => panic!("{other:?} in a rule"),
    }
}

#[test]
fn visibility_timeout_is_at_least_six_function_timeouts() {
    let t = Template::parse(&template_text());
    let timeout = number(t.parameter_default("FunctionTimeout"));
    let visibility = number(t.parameter_default("VisibilityTimeout"));
    assert!(
        visibility >= 6 * timeout,
        "default visibility {visibility} s < 6 × default timeout {timeout} s"
    );
    // Every function runs with the parameter, every agent queue hides with the other.
    for f in t.functions() {
        let v = t.function_prop(f, "Timeout").unwrap();
        assert!(is_ref_to(v, "FunctionTimeout"), "{f}: Timeout is {v:?}");
    }
    let mut none = Vec::new();
    for (agent, a) in agent_resources(&t, &agent_defs(), &mut none) {
        let v = t.prop(&a.queue, &["VisibilityTimeout"]).unwrap();
        assert!(is_ref_to(v, "VisibilityTimeout"), "{agent}: {v:?}");
    }
    // The Rules accept exactly the pairs of allowed values with v >= 6 t.
    let rules = get(&t.doc, &["Rules"])
        .and_then(Value::as_mapping)
        .expect("template has Rules");
    let assertions: Vec<&Value> = rules
        .values()
        .filter_map(|r| r.get("Assertions"))
        .flat_map(items)
        .filter_map(|a| a.get("Assert"))
        .collect();
    assert!(!assertions.is_empty());
    let timeouts = allowed_numbers(&t, "FunctionTimeout");
    let visibilities = allowed_numbers(&t, "VisibilityTimeout");
    assert!(timeouts.contains(&timeout) && visibilities.contains(&visibility));
    for &ft in &timeouts {
        for &vt in &visibilities {
            let params = BTreeMap::from([
                ("FunctionTimeout", ft.to_string()),
                ("VisibilityTimeout", vt.to_string()),
            ]);
            let accepted = assertions
                .iter()
                .all(|a| eval(a, &params) == Ev::Bool(true));
            assert_eq!(
                accepted,
                vt >= 6 * ft,
                "Rules {} FunctionTimeout={ft} with VisibilityTimeout={vt}",
                if accepted { "accept" } else { "refuse" }
            );
        }
    }
}

#[test]
fn max_receives_reaches_every_queue_and_every_function() {
    let t = Template::parse(&template_text());
    assert!(number(t.parameter_default("MaxReceives")) >= 1);
    let mut none = Vec::new();
    let agents = agent_resources(&t, &agent_defs(), &mut none);
    for (agent, a) in &agents {
        let v = t
            .prop(&a.queue, &["RedrivePolicy", "maxReceiveCount"])
            .unwrap();
        assert!(is_ref_to(v, "MaxReceives"), "{agent}'s queue: {v:?}");
    }
    for f in t.functions() {
        let env = t.env(f);
        assert!(
            env.get("AOS_MAX_RECEIVES")
                .is_some_and(|v| is_ref_to(v, "MaxReceives")),
            "{f}: AOS_MAX_RECEIVES is not !Ref MaxReceives"
        );
    }
}

#[test]
fn every_queue_states_the_message_size_the_adapter_sends() {
    let t = Template::parse(&template_text());
    let queues = t.of_type("AWS::SQS::Queue");
    assert!(!queues.is_empty());
    for (id, _) in queues {
        let size = number(t.prop(id, &["MaximumMessageSize"]));
        assert_eq!(
            size as usize,
            aos_aws::SQS_MESSAGE_LIMIT,
            "{id}: MaximumMessageSize {size}, the SQS adapter moves bodies to S3 above {}",
            aos_aws::SQS_MESSAGE_LIMIT
        );
    }
}

#[test]
fn agent_functions_take_batches_from_their_queue_and_allow_loops() {
    let t = Template::parse(&template_text());
    let mut none = Vec::new();
    let agents = agent_resources(&t, &agent_defs(), &mut none);
    assert!(none.is_empty(), "{none:?}");
    for (agent, a) in &agents {
        let f = &a.function;
        assert_eq!(
            t.prop(f, &["RecursiveLoop"]).and_then(Value::as_str),
            Some("Allow"),
            "{agent}: AOS's hop limit and budgets replace Lambda's loop detection"
        );
        let events = t.prop(f, &["Events"]).and_then(Value::as_mapping).unwrap();
        let sqs = events
            .values()
            .find(|e| e.get("Type").and_then(Value::as_str) == Some("SQS"))
            .and_then(|e| e.get("Properties"))
            .unwrap();
        assert_eq!(number(sqs.get("BatchSize")), 10, "{agent}");
        assert_eq!(
            sqs.get("FunctionResponseTypes"),
            Some(&yaml("[ReportBatchItemFailures]")),
            "{agent}: partial batch responses"
        );
        assert!(
            get(sqs, &["ScalingConfig", "MaximumConcurrency"])
                .is_some_and(|v| is_ref_to(v, "AgentMaxConcurrency")),
            "{agent}: ScalingConfig.MaximumConcurrency"
        );
        assert_eq!(
            t.prop(&a.queue, &["FifoQueue"]).and_then(Value::as_bool),
            Some(true),
            "{agent}: a FIFO mailbox"
        );
    }
}

#[test]
fn functions_are_cargo_lambda_builds_of_the_functions_package() {
    let t = Template::parse(&template_text());
    let arch = get(&t.doc, &["Parameters", "Architecture"]).unwrap();
    assert_eq!(arch.get("Default").and_then(Value::as_str), Some("arm64"));
    assert_eq!(arch.get("AllowedValues"), Some(&yaml("[arm64, x86_64]")));
    let mut binaries = BTreeSet::new();
    for f in t.functions() {
        assert_eq!(
            t.function_prop(f, "Runtime").and_then(Value::as_str),
            Some("provided.al2023"),
            "{f}"
        );
        let archs = t.function_prop(f, "Architectures").map(items).unwrap();
        assert!(
            archs.len() == 1 && is_ref_to(archs[0], "Architecture"),
            "{f}: Architectures {archs:?}"
        );
        assert_eq!(
            t.function_prop(f, "CodeUri").and_then(Value::as_str),
            Some("functions"),
            "{f}"
        );
        let meta = t.resource(f).and_then(|r| r.get("Metadata")).unwrap();
        assert_eq!(
            meta.get("BuildMethod").and_then(Value::as_str),
            Some("rust-cargolambda"),
            "{f}"
        );
        let bin = get(meta, &["BuildProperties", "Binary"])
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{f}: no BuildProperties.Binary"));
        assert!(
            binaries.insert(bin.to_string()),
            "two functions build {bin}"
        );
        if let Some(agent) = t.env(f).get("AOS_AGENT").and_then(Value::as_str) {
            assert_eq!(bin, agent, "{f}: an agent's binary links only its tools");
        }
    }
    let mut want: BTreeSet<String> = agent_defs().into_keys().collect();
    want.extend(["api", "scheduler", "sweep"].map(String::from));
    assert_eq!(binaries, want);
    // Each is a binary of the functions/ package: a [[bin]] or src/bin/<name>.
    let manifest = std::fs::read_to_string(root().join("functions/Cargo.toml"))
        .expect("functions/Cargo.toml: the package sam build builds");
    let manifest: toml::Table = toml::from_str(&manifest).unwrap();
    let declared: BTreeSet<String> = manifest
        .get("bin")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|b| b.get("name")?.as_str().map(String::from))
        .collect();
    for bin in &binaries {
        let dir = root().join("functions/src/bin");
        assert!(
            declared.contains(bin)
                || dir.join(format!("{bin}.rs")).is_file()
                || dir.join(bin).join("main.rs").is_file(),
            "functions/ builds no binary {bin}"
        );
    }
}

#[test]
fn the_sweep_runs_on_a_schedule_and_failed_firings_dead_letter() {
    let t = Template::parse(&template_text());
    let sweeps: Vec<&str> = t
        .functions()
        .into_iter()
        .filter(|f| {
            get(
                t.resource(f).unwrap(),
                &["Metadata", "BuildProperties", "Binary"],
            )
            .and_then(Value::as_str)
                == Some("sweep")
        })
        .collect();
    assert_eq!(sweeps.len(), 1);
    let schedule = t
        .prop(sweeps[0], &["Events"])
        .and_then(Value::as_mapping)
        .unwrap()
        .values()
        .find(|e| e.get("Type").and_then(Value::as_str) == Some("ScheduleV2"))
        .expect("the sweep has a ScheduleV2 event");
    let expr = get(schedule, &["Properties", "ScheduleExpression"]).unwrap();
    let (param, _) = reference(expr).expect("ScheduleExpression is a parameter");
    let rates = get(&t.doc, &["Parameters", &param, "AllowedValues"]).unwrap();
    assert_eq!(rates, &yaml("[rate(1 minute), rate(5 minutes)]"));

    // Every schedule has a dead-letter queue; Scheduler takes only standard queues.
    let dlqs = schedule_dlqs(&t);
    assert!(!dlqs.is_empty());
    for q in &dlqs {
        assert_ne!(
            t.prop(q, &["FifoQueue"]).and_then(Value::as_bool),
            Some(true),
            "{q}: Scheduler's dead-letter queue must be a standard queue"
        );
    }
    for f in t.functions() {
        for (name, e) in t
            .prop(f, &["Events"])
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
        {
            if e.get("Type").and_then(Value::as_str) == Some("ScheduleV2") {
                assert!(
                    get(e, &["Properties", "DeadLetterConfig", "Arn"]).is_some(),
                    "{f} {name:?}: no DeadLetterConfig"
                );
            }
        }
    }
    // Wake-ups the agents schedule can name it too.
    let mut none = Vec::new();
    for (agent, a) in agent_resources(&t, &agent_defs(), &mut none) {
        let v = t.env(&a.function).get("AOS_SCHEDULE_DLQ_ARN").cloned();
        assert!(
            v.as_ref()
                .and_then(|v| t.arn_of_type(v, "AWS::SQS::Queue"))
                .is_some_and(|q| dlqs.contains(&q)),
            "{agent}: AOS_SCHEDULE_DLQ_ARN {v:?}"
        );
    }
}

// ------------------------------------------------------------------ alarms

/// `(namespace, metric, dimension name, what the dimension points at)` of every alarm.
fn alarms(t: &Template) -> Vec<(String, String, String, String)> {
    t.of_type("AWS::CloudWatch::Alarm")
        .into_iter()
        .filter_map(|(id, _)| {
            let s = |k: &str| t.prop(id, &[k]).and_then(Value::as_str).map(String::from);
            let dims = t.prop(id, &["Dimensions"]).map(items).unwrap_or_default();
            let d = dims.first()?;
            let name = d.get("Name")?.as_str()?.to_string();
            let (target, _) = reference(d.get("Value")?)?;
            Some((s("Namespace")?, s("MetricName")?, name, target))
        })
        .collect()
}

#[test]
fn alarms_watch_dead_letters_errors_throttles_mailbox_age_and_api_5xx() {
    let t = Template::parse(&template_text());
    let alarms = alarms(&t);
    let has = |ns: &str, metric: &str, dim: &str, id: &str| {
        alarms
            .iter()
            .any(|a| a.0 == ns && a.1 == metric && a.2 == dim && a.3 == id)
    };
    let mut missing = Vec::new();
    let mut none = Vec::new();
    let agents = agent_resources(&t, &agent_defs(), &mut none);
    let dlqs = agents
        .values()
        .map(|a| a.dlq.clone())
        .chain(schedule_dlqs(&t));
    for q in dlqs {
        if !has(
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            "QueueName",
            &q,
        ) {
            missing.push(format!("DLQ depth of {q}"));
        }
    }
    for a in agents.values() {
        if !has(
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            "QueueName",
            &a.queue,
        ) {
            missing.push(format!("age of the oldest message in {}", a.queue));
        }
    }
    for f in t.functions() {
        for metric in ["Errors", "Throttles"] {
            if !has("AWS/Lambda", metric, "FunctionName", f) {
                missing.push(format!("{metric} of {f}"));
            }
        }
    }
    for (api, _) in t.of_type("AWS::Serverless::HttpApi") {
        if !has("AWS/ApiGateway", "5xx", "ApiId", api) {
            missing.push(format!("5xx of {api}"));
        }
    }
    assert!(missing.is_empty(), "no alarm on: {missing:#?}");
}

// ------------------------------------------------------------------ secrets

#[test]
fn model_keys_come_from_ssm_and_only_agents_can_read_them() {
    let t = Template::parse(&template_text());
    let keys = [
        ("OPENAI_API_KEY_PARAM", "OpenAiKeyParameter"),
        ("ANTHROPIC_API_KEY_PARAM", "AnthropicKeyParameter"),
    ];
    for (_, param) in keys {
        assert_eq!(
            t.parameter_default(param).and_then(Value::as_str),
            Some(""),
            "{param}: no key unless one is configured"
        );
    }
    let mut none = Vec::new();
    let agents = agent_resources(&t, &agent_defs(), &mut none);
    for f in t.functions() {
        let env = t.env(f);
        for (name, v) in &env {
            let upper = name.to_ascii_uppercase();
            assert!(
                !(upper.ends_with("_KEY")
                    || upper.contains("SECRET_VALUE")
                    || upper.contains("PASSWORD")
                    || upper.contains("TOKEN")),
                "{f}: {name} looks like a secret in the environment"
            );
            assert!(
                !show(v).contains("{{resolve:"),
                "{f}: {name} resolves a secret into the environment"
            );
        }
        let role = t
            .prop(f, &["Role"])
            .and_then(|r| t.arn_of_type(r, "AWS::IAM::Role"))
            .unwrap();
        // (action, parameter the resource names) of every SSM/Secrets Manager/KMS grant.
        let mut reads: BTreeSet<(String, String)> = BTreeSet::new();
        for st in role_statements(&t, &role) {
            let actions: Vec<String> = st
                .get("Action")
                .map(items)
                .unwrap_or_default()
                .into_iter()
                .map(|a| show(a).to_ascii_lowercase())
                .collect();
            for action in actions {
                let service = action.split(':').next().unwrap_or_default().to_string();
                if !matches!(service.as_str(), "ssm" | "secretsmanager" | "kms" | "*") {
                    continue;
                }
                for r in st.get("Resource").map(items).unwrap_or_default() {
                    let named = if action == "kms:decrypt" && is_ref_to(r, "KeysKmsKeyArn") {
                        "KeysKmsKeyArn".to_string()
                    } else {
                        sub_text(r)
                            .and_then(|s| {
                                s.strip_prefix(
                                    "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${",
                                )?
                                .strip_suffix('}')
                                .map(String::from)
                            })
                            .unwrap_or_else(|| format!("unrecognised {}", show(r)))
                    };
                    reads.insert((action.clone(), named));
                }
            }
        }
        let is_agent = agents.values().any(|a| a.function == f);
        let mut want: BTreeSet<(String, String)> = BTreeSet::new();
        for (var, param) in keys {
            let set = env.get(var).map(branches).unwrap_or_default();
            if is_agent {
                assert!(
                    set.len() == 1 && is_ref_to(set[0], param),
                    "{f}: {var} should be !Ref {param} when it is set, is {set:?}"
                );
                want.insert(("ssm:getparameter".into(), param.into()));
            } else {
                assert!(set.is_empty(), "{f} calls no model but gets {var}");
            }
        }
        if is_agent {
            want.insert(("kms:decrypt".into(), "KeysKmsKeyArn".into()));
        }
        assert_eq!(
            reads, want,
            "{f} ({role}): secret reads other than exactly its key parameters"
        );
    }
}

// ------------------------------------------------------------------ what the adapters expect

#[test]
fn the_table_bucket_and_queues_are_what_the_adapters_expect() {
    let t = Template::parse(&template_text());
    let tables = t.of_type("AWS::DynamoDB::Table");
    assert_eq!(tables.len(), 1);
    let table = tables[0].0;
    let keys = |path: &[&str]| -> Vec<(String, String)> {
        t.prop(table, path)
            .map(items)
            .unwrap_or_default()
            .into_iter()
            .map(|k| {
                (
                    show(k.get("AttributeName").unwrap()),
                    show(k.get("KeyType").unwrap()),
                )
            })
            .collect()
    };
    let pair = |a: &str, b: &str| {
        vec![
            (a.to_string(), "HASH".to_string()),
            (b.to_string(), "RANGE".to_string()),
        ]
    };
    assert_eq!(keys(&["KeySchema"]), pair(aos_aws::PK, aos_aws::SK));
    let gsi = t
        .prop(table, &["GlobalSecondaryIndexes"])
        .map(items)
        .unwrap()
        .into_iter()
        .find(|g| g.get("IndexName").and_then(Value::as_str) == Some(aos_aws::GSI))
        .expect("the tasks-by-status index");
    let gsi_keys: Vec<(String, String)> = items(gsi.get("KeySchema").unwrap())
        .into_iter()
        .map(|k| {
            (
                show(k.get("AttributeName").unwrap()),
                show(k.get("KeyType").unwrap()),
            )
        })
        .collect();
    assert_eq!(gsi_keys, pair(aos_aws::GSI_PK, aos_aws::GSI_SK));
    assert_eq!(
        t.prop(table, &["TimeToLiveSpecification", "AttributeName"])
            .and_then(Value::as_str),
        Some(aos_aws::TTL)
    );

    let buckets = t.of_type("AWS::S3::Bucket");
    assert_eq!(buckets.len(), 1);
    let bucket = buckets[0].0;
    let prefixes: BTreeSet<String> = t
        .prop(bucket, &["LifecycleConfiguration", "Rules"])
        .map(items)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| r.get("Prefix").and_then(Value::as_str).map(String::from))
        .collect();
    for p in ["bodies/", "wakes/", "outbox/", "journal/"] {
        assert!(prefixes.contains(p), "no lifecycle rule expires {p}");
    }
    assert!(
        !prefixes.iter().any(|p| p.starts_with("state")),
        "session state is live data and must never expire"
    );

    let agents = agent_defs();
    for f in t.functions() {
        let env = t.env(f);
        assert!(
            env.get("AOS_TABLE").is_some_and(|v| is_ref_to(v, table)),
            "{f}: AOS_TABLE"
        );
        assert!(
            env.get("AOS_BUCKET").is_some_and(|v| is_ref_to(v, bucket)),
            "{f}: AOS_BUCKET"
        );
        for agent in agents.keys() {
            let var = format!("AOS_QUEUE_URL_{}", agent.to_uppercase().replace('-', "_"));
            assert!(env.contains_key(&var), "{f}: no {var}");
        }
    }
}

// ------------------------------------------------------------------ sam validate, cfn-lint

/// aws-sam-cli (which brings cfn-lint), installed once into `target/sam-venv` by the
/// installer the Lambda RIE test shares.
fn ensure_sam() -> PathBuf {
    let venv = aos_aws::emulator::default_sam_venv();
    aos_aws::emulator::ensure_sam_cli(&venv).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a linter on template.yaml from the repository root; fails with its output.
fn lint(program: &str, args: &[&str]) {
    let bin = ensure_sam();
    let out = Command::new(bin.join(program))
        .args(args)
        .current_dir(root())
        // Plain `sam validate` needs a region; neither needs credentials or network.
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("SAM_CLI_TELEMETRY", "0")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} exited with {}:\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sam_validate_lint_passes() {
    lint(
        "sam",
        &["validate", "--lint", "--template", "template.yaml"],
    );
}

#[test]
fn cfn_lint_passes() {
    lint("cfn-lint", &["template.yaml"]);
}
