//! The configuration of a function, read once from the environment the SAM template
//! sets. The rules: every error names the variable to fix and says what it expected;
//! an unset or empty variable takes a default that works; and no secret is ever read
//! from the environment, only where to fetch it (an SSM parameter or a Secrets
//! Manager secret), so a key never shows in the function's configuration.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `AOS_AGENT` | the agent whose queue an agent function serves | the binary's agent |
//! | `AOS_TABLE`, `AOS_BUCKET`, `AOS_QUEUE_PREFIX`, `AOS_QUEUE_URL_<AGENT>`, `AOS_DLQ_URL[_<AGENT>]`, `AOS_SCHEDULE_GROUP`, `AOS_SCHEDULER_ROLE_ARN` | AWS resources ([`AwsSettings::from_env`]) | see there |
//! | `AOS_SCHEDULER_FUNCTION_ARN` | the scheduler function task schedules invoke; set (api function) to manage schedules | unset: no schedules API |
//! | `AOS_TASK_SCHEDULE_ROLE_ARN` | the role EventBridge Scheduler assumes to invoke it (required with the above) | none |
//! | `AOS_TASK_SCHEDULE_GROUP` | the schedule group task schedules live in | `aos-tasks` |
//! | `AOS_SCHEDULE_DLQ_ARN` | where firings that could not be delivered go | none |
//! | `AOS_MAX_RECEIVES` | the queue's maxReceiveCount: the last receive dead-letters with a reason | 5 |
//! | `AOS_DEADLINE_MARGIN_MS` | no record or model step starts this close to the invocation deadline | 10000 |
//! | `AOS_MODEL` | a route that replaces every agent's own (`provider:model`) | none |
//! | `AOS_DEFAULT_MODEL` | the route of agents whose model is `auto` | a configured provider's, else `offline` |
//! | `OPENAI_API_KEY_PARAM` / `_SECRET` | SSM parameter / Secrets Manager secret holding the OpenAI key | none |
//! | `ANTHROPIC_API_KEY_PARAM` / `_SECRET` | the same for Anthropic | none |
//! | `OPENAI_BASE_URL`, `ANTHROPIC_BASE_URL` | a compatible server or a gateway | the provider's |
//! | `AOS_OFFLINE` | tools answer from bundled samples, never the network (1/0/true/false) | false |
//! | `AOS_HTTP_ALLOW` | hosts `http_get` may fetch, comma-separated | none |

use aos_agents::ToolsConfig;
use aos_aws::AwsSettings;
use aos_models::SecretRef;

/// Everything a function reads from its environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// `AOS_AGENT`; `None` in functions that serve no queue (api, scheduler, sweep).
    pub agent: Option<String>,
    /// The AWS resources: table, bucket, queues, schedule group.
    pub aws: AwsSettings,
    /// The queue's maximum receive count, so the last receive can fail its task with
    /// a reason instead of the queue parking the message silently.
    pub max_receives: u32,
    /// Time kept free before the invocation deadline to commit what a wake has done.
    pub deadline_margin_ms: u64,
    /// `AOS_MODEL`: the route every agent uses instead of its own.
    pub model: Option<String>,
    /// `AOS_DEFAULT_MODEL`: the route of `auto` agents.
    pub default_model: Option<String>,
    /// Where the OpenAI key is kept (fetched once at init).
    pub openai_key: Option<SecretRef>,
    pub openai_base_url: Option<String>,
    /// Where the Anthropic key is kept (fetched once at init).
    pub anthropic_key: Option<SecretRef>,
    pub anthropic_base_url: Option<String>,
    /// How tools reach the network.
    pub tools: ToolsConfig,
    /// Whether task schedules can be managed (`AOS_SCHEDULER_FUNCTION_ARN` is set);
    /// where they live is `aws.task_schedules`.
    pub task_schedules: bool,
}

/// A variable that is wrong, and how.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{var}: {why}")]
    Invalid { var: String, why: String },
}

fn invalid(var: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var: var.to_string(),
        why: why.into(),
    }
}

/// The default of `AOS_DEADLINE_MARGIN_MS`: room for an inline tool call after the
/// last model step (a tool's HTTP calls time out after a few seconds) and the commit.
pub const DEFAULT_DEADLINE_MARGIN_MS: u64 = 10_000;

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok(), AwsSettings::from_env())
    }

    /// Reads variables through `get` (tests pass a map), with the AWS resource names
    /// already read.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        mut aws: AwsSettings,
    ) -> Result<Self, ConfigError> {
        // The template passes empty strings for parameters left unset.
        let var = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let max_receives = match var("AOS_MAX_RECEIVES") {
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(invalid(
                        "AOS_MAX_RECEIVES",
                        format!("expected a whole number of at least 1, got {v:?}"),
                    ));
                }
            },
            None => 5,
        };
        aws.queues.max_receives = max_receives;
        let deadline_margin_ms = match var("AOS_DEADLINE_MARGIN_MS") {
            Some(v) => v.parse::<u64>().map_err(|_| {
                invalid(
                    "AOS_DEADLINE_MARGIN_MS",
                    format!("expected milliseconds as a whole number, got {v:?}"),
                )
            })?,
            None => DEFAULT_DEADLINE_MARGIN_MS,
        };
        let mut tools = ToolsConfig::default();
        if let Some(v) = var("AOS_OFFLINE") {
            tools.offline = parse_bool("AOS_OFFLINE", &v)?;
        }
        if let Some(v) = var("AOS_HTTP_ALLOW") {
            tools.http_allow = v
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_string)
                .collect();
        }
        let task_schedules = match var("AOS_SCHEDULER_FUNCTION_ARN") {
            Some(target) => {
                let Some(role) = var("AOS_TASK_SCHEDULE_ROLE_ARN") else {
                    return Err(invalid(
                        "AOS_TASK_SCHEDULE_ROLE_ARN",
                        "is required with AOS_SCHEDULER_FUNCTION_ARN: the role EventBridge \
                         Scheduler assumes to invoke the scheduler function",
                    ));
                };
                aws.task_schedules.target_arn = target;
                aws.task_schedules.role_arn = role;
                if let Some(group) = var("AOS_TASK_SCHEDULE_GROUP") {
                    aws.task_schedules.group = group;
                }
                aws.task_schedules.dead_letter_arn = var("AOS_SCHEDULE_DLQ_ARN");
                true
            }
            None => false,
        };
        Ok(Self {
            agent: var("AOS_AGENT"),
            aws,
            max_receives,
            deadline_margin_ms,
            model: var("AOS_MODEL"),
            default_model: var("AOS_DEFAULT_MODEL"),
            openai_key: key_ref(&var, "OPENAI")?,
            openai_base_url: var("OPENAI_BASE_URL"),
            anthropic_key: key_ref(&var, "ANTHROPIC")?,
            anthropic_base_url: var("ANTHROPIC_BASE_URL"),
            tools,
            task_schedules,
        })
    }

    /// The agent an agent function serves: `AOS_AGENT`, which must be the agent the
    /// binary was built for (its tools are the only ones linked in), else that agent.
    pub fn agent_for(&self, binary: &str) -> Result<String, ConfigError> {
        match &self.agent {
            Some(a) if a != binary => Err(invalid(
                "AOS_AGENT",
                format!(
                    "is {a:?}, but this is the {binary} function's binary, which links only \
                     {binary}'s tools; deploy the {a} binary for that agent or unset AOS_AGENT"
                ),
            )),
            _ => Ok(binary.to_string()),
        }
    }
}

/// `1`, `0`, `true` or `false`, in any case.
pub fn parse_bool(var: &str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(invalid(
            var,
            format!("expected 1, 0, true or false, got {value:?}"),
        )),
    }
}

/// Where `<PROVIDER>_API_KEY` is kept: `_PARAM` names an SSM parameter, `_SECRET` a
/// Secrets Manager secret (name or ARN); one of them at most, and never the key.
fn key_ref(
    var: &impl Fn(&str) -> Option<String>,
    provider: &str,
) -> Result<Option<SecretRef>, ConfigError> {
    let plain = format!("{provider}_API_KEY");
    let param = format!("{provider}_API_KEY_PARAM");
    let secret = format!("{provider}_API_KEY_SECRET");
    if var(&plain).is_some() {
        return Err(invalid(
            &plain,
            format!(
                "a key in the environment is readable by anyone who can read the function's \
                 configuration; store it as an SSM SecureString parameter and set {param} to \
                 its name (or a Secrets Manager secret and set {secret})"
            ),
        ));
    }
    match (var(&param), var(&secret)) {
        (Some(_), Some(_)) => Err(invalid(
            &param,
            format!("set only one of {param} and {secret}"),
        )),
        (Some(name), None) => {
            let r = if name.starts_with("arn:") {
                name.parse::<SecretRef>()
                    .map_err(|e| invalid(&param, e.to_string()))?
            } else {
                SecretRef::Ssm(name)
            };
            match r {
                SecretRef::Ssm(_) => Ok(Some(r)),
                SecretRef::SecretsManager(_) => Err(invalid(
                    &param,
                    format!("names a Secrets Manager secret; set {secret} instead"),
                )),
            }
        }
        (None, Some(id)) => {
            if id.starts_with("arn:") && id.split(':').nth(2) != Some("secretsmanager") {
                return Err(invalid(
                    &secret,
                    format!(
                        "is not a Secrets Manager secret ARN (an SSM parameter goes in {param})"
                    ),
                ));
            }
            Ok(Some(SecretRef::SecretsManager(id)))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned(), AwsSettings::default())
    }

    fn error_of(vars: &[(&str, &str)]) -> String {
        config(vars).unwrap_err().to_string()
    }

    #[test]
    fn an_empty_environment_gives_defaults_that_work() {
        let c = config(&[]).unwrap();
        assert_eq!(c.agent, None);
        assert_eq!(c.max_receives, 5);
        assert_eq!(c.aws.queues.max_receives, 5);
        assert_eq!(c.deadline_margin_ms, DEFAULT_DEADLINE_MARGIN_MS);
        assert!(c.openai_key.is_none() && c.anthropic_key.is_none());
        assert!(!c.tools.offline);
        assert_eq!(c.agent_for("weather").unwrap(), "weather");
    }

    #[test]
    fn values_are_read_and_empty_ones_are_unset() {
        let c = config(&[
            ("AOS_AGENT", "weather"),
            ("AOS_MAX_RECEIVES", "8"),
            ("AOS_DEADLINE_MARGIN_MS", "3000"),
            ("AOS_MODEL", "bedrock:anthropic.claude-haiku-4-5"),
            ("AOS_OFFLINE", "TRUE"),
            ("AOS_HTTP_ALLOW", "api.example.com, *.example.org"),
            ("OPENAI_API_KEY_PARAM", "/aos/openai"),
            ("ANTHROPIC_API_KEY_SECRET", "aos/anthropic"),
            ("ANTHROPIC_API_KEY_PARAM", " "),
            ("AOS_DEFAULT_MODEL", ""),
        ])
        .unwrap();
        assert_eq!(c.agent.as_deref(), Some("weather"));
        assert_eq!((c.max_receives, c.aws.queues.max_receives), (8, 8));
        assert_eq!(c.deadline_margin_ms, 3000);
        assert_eq!(
            c.model.as_deref(),
            Some("bedrock:anthropic.claude-haiku-4-5")
        );
        assert_eq!(c.default_model, None);
        assert!(c.tools.offline);
        assert_eq!(c.tools.http_allow, ["api.example.com", "*.example.org"]);
        assert_eq!(c.openai_key, Some(SecretRef::Ssm("/aos/openai".into())));
        assert_eq!(
            c.anthropic_key,
            Some(SecretRef::SecretsManager("aos/anthropic".into()))
        );
        assert_eq!(c.agent_for("weather").unwrap(), "weather");
        let wrong = c.agent_for("finance").unwrap_err().to_string();
        assert!(wrong.starts_with("AOS_AGENT: is \"weather\""), "{wrong}");
    }

    #[test]
    fn booleans_accept_one_zero_true_false() {
        for (v, want) in [("1", true), ("0", false), ("true", true), ("False", false)] {
            assert_eq!(config(&[("AOS_OFFLINE", v)]).unwrap().tools.offline, want);
        }
        let e = error_of(&[("AOS_OFFLINE", "yes")]);
        assert_eq!(e, "AOS_OFFLINE: expected 1, 0, true or false, got \"yes\"");
    }

    #[test]
    fn every_error_names_its_variable() {
        for (vars, starts) in [
            (
                vec![("AOS_MAX_RECEIVES", "0")],
                "AOS_MAX_RECEIVES: expected",
            ),
            (
                vec![("AOS_MAX_RECEIVES", "five")],
                "AOS_MAX_RECEIVES: expected",
            ),
            (
                vec![("AOS_DEADLINE_MARGIN_MS", "2s")],
                "AOS_DEADLINE_MARGIN_MS: expected",
            ),
            (
                vec![
                    ("OPENAI_API_KEY_PARAM", "/a"),
                    ("OPENAI_API_KEY_SECRET", "b"),
                ],
                "OPENAI_API_KEY_PARAM: set only one of",
            ),
            (
                vec![(
                    "ANTHROPIC_API_KEY_PARAM",
                    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:k",
                )],
                "ANTHROPIC_API_KEY_PARAM: names a Secrets Manager secret",
            ),
            (
                vec![(
                    "OPENAI_API_KEY_SECRET",
                    "arn:aws:ssm:eu-west-1:123456789012:parameter/k",
                )],
                "OPENAI_API_KEY_SECRET: is not a Secrets Manager secret ARN",
            ),
        ] {
            let e = error_of(&vars);
            assert!(e.starts_with(starts), "{vars:?}: {e}");
        }
    }

    #[test]
    fn a_key_in_the_environment_is_refused_without_being_repeated() {
        let e = error_of(&[("ANTHROPIC_API_KEY", "sk-ant-secret")]);
        assert!(
            e.starts_with("ANTHROPIC_API_KEY: a key in the environment"),
            "{e}"
        );
        assert!(e.contains("ANTHROPIC_API_KEY_PARAM"), "{e}");
        assert!(!e.contains("sk-ant"), "{e}");
    }

    #[test]
    fn task_schedules_need_the_function_and_the_role() {
        assert!(!config(&[]).unwrap().task_schedules);
        let c = config(&[
            (
                "AOS_SCHEDULER_FUNCTION_ARN",
                "arn:aws:lambda:eu-west-1:123456789012:function:s",
            ),
            (
                "AOS_TASK_SCHEDULE_ROLE_ARN",
                "arn:aws:iam::123456789012:role/r",
            ),
            ("AOS_TASK_SCHEDULE_GROUP", "tasks"),
            ("AOS_SCHEDULE_DLQ_ARN", ""),
        ])
        .unwrap();
        assert!(c.task_schedules);
        let t = &c.aws.task_schedules;
        assert_eq!(
            (t.target_arn.as_str(), t.role_arn.as_str(), t.group.as_str()),
            (
                "arn:aws:lambda:eu-west-1:123456789012:function:s",
                "arn:aws:iam::123456789012:role/r",
                "tasks"
            )
        );
        assert_eq!(t.dead_letter_arn, None);
        let e = error_of(&[("AOS_SCHEDULER_FUNCTION_ARN", "arn:aws:lambda:x")]);
        assert!(
            e.starts_with("AOS_TASK_SCHEDULE_ROLE_ARN: is required"),
            "{e}"
        );
    }

    #[test]
    fn parameter_arns_are_kept_as_ssm_references() {
        let arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/aos/openai";
        let c = config(&[("OPENAI_API_KEY_PARAM", arn)]).unwrap();
        assert_eq!(c.openai_key, Some(SecretRef::Ssm(arn.into())));
    }
}
