//! Schedules: a task (or a wake-up) submitted to an agent on a timetable, on behalf of
//! a tenant. The [`Schedules`] port stores them; the embedded runtime fires them itself
//! and, on AWS, EventBridge Scheduler fires them into the scheduler function.
//!
//! Times are written the way EventBridge Scheduler reads them, so one text means the
//! same on both backends, and every expression is checked here, before it reaches a
//! store, with an error a person can act on ([`When::parse`]):
//!
//! | text | meaning |
//! |---|---|
//! | `cron(0 9 ? * MON-FRI *)` | minutes, hours, day of month, month, day of week (1-7 = SUN-SAT), year; exactly one of the two day fields is `?` |
//! | `rate(5 minutes)` | every 5 minutes (also `hour(s)`, `day(s)`), counted from the schedule's creation |
//! | `at(2026-01-01T09:00:00)` | once, in UTC |
//! | `2026-01-01T10:00:00+01:00` | once (RFC 3339 with `Z` or an offset) |
//!
//! Every time is UTC and whole seconds (cron and rate: whole minutes), the service's
//! resolution. [`When::next_fire`] is the pure rule the embedded runtime fires by.

use crate::model::AgentName;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

use crate::ports::PortError;

/// A task or wake-up for an agent, fired on a timetable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Schedule {
    /// Made by the server (a ULID), unique within the tenant; names the schedule in
    /// the store and, with the firing time, derives each firing's task id.
    pub id: String,
    /// The tenant the schedule belongs to and its tasks run for (`default`, `acme`).
    pub tenant: String,
    /// The agent each firing submits a task to.
    #[schemars(with = "String")]
    pub agent: AgentName,
    pub kind: ScheduleKind,
    /// The task input (or the wake-up's note); see [`Schedule::task_input`].
    pub input: String,
    pub when: When,
    /// Milliseconds since the Unix epoch; the start of a `rate(...)` timetable.
    pub created_at: u64,
    /// Who created it (the caller's subject), for the audit trail.
    pub created_by: String,
}

/// What a firing does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Each firing submits `input` as a new task.
    Task,
    /// Each firing submits a task whose input is `Scheduled wake-up: <input>`.
    Wakeup,
}

impl ScheduleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Wakeup => "wakeup",
        }
    }
}

impl std::str::FromStr for ScheduleKind {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "task" => Ok(Self::Task),
            "wakeup" => Ok(Self::Wakeup),
            other => Err(ScheduleError(format!(
                "unknown schedule kind {other:?}: use \"task\" or \"wakeup\""
            ))),
        }
    }
}

impl Schedule {
    /// A new schedule with a fresh id, made at `now_ms`.
    pub fn new(
        tenant: impl Into<String>,
        agent: AgentName,
        kind: ScheduleKind,
        input: impl Into<String>,
        when: When,
        created_by: impl Into<String>,
        now_ms: u64,
    ) -> Self {
        Self {
            id: crate::ids::TaskId::new(now_ms).to_string(),
            tenant: tenant.into(),
            agent,
            kind,
            input: input.into(),
            when,
            created_at: now_ms,
            created_by: created_by.into(),
        }
    }

    /// The input of the task each firing submits.
    pub fn task_input(&self) -> String {
        task_input(self.kind, &self.input)
    }

    /// The first firing strictly after `after_ms`; `None` when it never fires again.
    pub fn next_fire(&self, after_ms: u64) -> Option<u64> {
        self.when.next_fire(self.created_at, after_ms)
    }
}

/// The input of the task a firing of `kind` submits.
pub fn task_input(kind: ScheduleKind, input: &str) -> String {
    match kind {
        ScheduleKind::Task => input.to_string(),
        ScheduleKind::Wakeup => format!("Scheduled wake-up: {input}"),
    }
}

/// What one firing carries to the scheduler function: the `detail` of the
/// EventBridge event (on AWS, inside the Scheduler target's `Input`; the shape is
/// documented in `aos_entrypoints::schedule`). Only `input` is required, so a
/// schedule written by hand (the template's own) needs no more than
/// `{"agent": "primary", "input": "..."}`; the rest describes a schedule made
/// through the [`Schedules`] port, so it can be listed back from the service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledTask {
    #[serde(default = "default_agent")]
    pub agent: String,
    pub input: String,
    /// The tenant the task runs for; `default` when absent.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    #[serde(default = "default_kind")]
    pub kind: ScheduleKind,
    /// The [`Schedule::id`], for schedules made through the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
}

fn default_agent() -> String {
    "primary".into()
}

fn default_tenant() -> String {
    "default".into()
}

fn default_kind() -> ScheduleKind {
    ScheduleKind::Task
}

impl ScheduledTask {
    /// The payload of every firing of `s`.
    pub fn of(s: &Schedule) -> Self {
        Self {
            agent: s.agent.as_str().to_string(),
            input: s.input.clone(),
            tenant: s.tenant.clone(),
            kind: s.kind,
            schedule: Some(s.id.clone()),
            created_by: Some(s.created_by.clone()),
            created_at: Some(s.created_at),
        }
    }

    /// The input of the task a firing submits.
    pub fn task_input(&self) -> String {
        task_input(self.kind, &self.input)
    }

    /// The schedule this payload was made from, given its timetable; `None` when it
    /// was not made through the port (no schedule id) or names no valid agent.
    /// `created_at` falls back to `fallback_created_at` (the service's own date).
    pub fn to_schedule(&self, when: When, fallback_created_at: u64) -> Option<Schedule> {
        Some(Schedule {
            id: self.schedule.clone()?,
            tenant: self.tenant.clone(),
            agent: AgentName::new(self.agent.clone()).ok()?,
            kind: self.kind,
            input: self.input.clone(),
            when,
            created_at: self.created_at.unwrap_or(fallback_created_at),
            created_by: self.created_by.clone().unwrap_or_default(),
        })
    }
}

/// Stored schedules, per tenant. Implementations: `aos_local::LocalStore` (SQLite),
/// `aos_aws::EventSchedules` (EventBridge Scheduler), `testkit::MemSchedules`.
#[async_trait]
pub trait Schedules: Send + Sync {
    /// Stores a new schedule. `Err(Rejected)` when its id exists in its tenant already.
    async fn create(&self, schedule: &Schedule) -> Result<(), PortError>;
    /// The tenant's schedules, oldest first (by id).
    async fn list(&self, tenant: &str) -> Result<Vec<Schedule>, PortError>;
    async fn get(&self, tenant: &str, id: &str) -> Result<Option<Schedule>, PortError>;
    /// Removes it; false when the tenant has no schedule with this id.
    async fn delete(&self, tenant: &str, id: &str) -> Result<bool, PortError>;
}

/// A schedule expression that does not parse, with what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ScheduleError> {
    Err(ScheduleError(msg.into()))
}

/// When a schedule fires. Written and read as its expression text (`cron(...)`,
/// `rate(...)`, `at(...)`), which is also what EventBridge Scheduler is given.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum When {
    /// The six fields of an EventBridge cron expression, normalised to single spaces.
    Cron(String),
    /// Every `value` units, from the schedule's creation.
    Rate { value: u32, unit: RateUnit },
    /// Once, at these milliseconds since the Unix epoch (whole seconds).
    At(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateUnit {
    Minutes,
    Hours,
    Days,
}

impl RateUnit {
    fn ms(self) -> u64 {
        match self {
            Self::Minutes => 60_000,
            Self::Hours => 3_600_000,
            Self::Days => 86_400_000,
        }
    }
    fn name(self, value: u32) -> &'static str {
        match (self, value == 1) {
            (Self::Minutes, true) => "minute",
            (Self::Minutes, false) => "minutes",
            (Self::Hours, true) => "hour",
            (Self::Hours, false) => "hours",
            (Self::Days, true) => "day",
            (Self::Days, false) => "days",
        }
    }
}

impl When {
    /// Reads `cron(...)`, `rate(...)`, `at(...)` or an RFC 3339 time (see the module
    /// docs), with an error that says what is wrong.
    pub fn parse(text: &str) -> Result<When, ScheduleError> {
        let t = text.trim();
        let lower = t.to_ascii_lowercase();
        let inner = |prefix: &str| -> Option<&str> {
            if lower.starts_with(prefix) {
                t.get(prefix.len()..)?.strip_suffix(')').map(str::trim)
            } else {
                None
            }
        };
        if lower.starts_with("cron(") {
            let Some(body) = inner("cron(") else {
                return err(format!("{t:?}: a cron expression ends with `)`"));
            };
            CronSpec::parse(body)?;
            let fields: Vec<&str> = body.split_whitespace().collect();
            return Ok(When::Cron(fields.join(" ")));
        }
        if lower.starts_with("rate(") {
            let Some(body) = inner("rate(") else {
                return err(format!("{t:?}: a rate expression ends with `)`"));
            };
            return parse_rate(body);
        }
        if lower.starts_with("at(") {
            let Some(body) = inner("at(") else {
                return err(format!("{t:?}: an at expression ends with `)`"));
            };
            let Some(ms) = parse_datetime(body, false) else {
                return err(format!(
                    "{t:?}: write a one-time schedule as at(yyyy-mm-ddThh:mm:ss) in UTC, \
                     e.g. at(2030-01-01T09:00:00)"
                ));
            };
            return Ok(When::At(ms));
        }
        if t.starts_with(|c: char| c.is_ascii_digit()) {
            return match parse_datetime(t, true) {
                Some(ms) => Ok(When::At(ms)),
                None => err(format!(
                    "{t:?} is not an RFC 3339 time: write e.g. 2030-01-01T09:00:00Z or \
                     2030-01-01T10:00:00+01:00 (the offset is required)"
                )),
            };
        }
        err(format!(
            "{t:?} is not a schedule: use cron(min hour day-of-month month day-of-week year), \
             e.g. cron(0 9 * * ? *), rate(5 minutes), at(2030-01-01T09:00:00) or an RFC 3339 time"
        ))
    }

    /// The EventBridge Scheduler `ScheduleExpression` (with timezone UTC).
    pub fn expression(&self) -> String {
        match self {
            When::Cron(fields) => format!("cron({fields})"),
            When::Rate { value, unit } => format!("rate({value} {})", unit.name(*value)),
            When::At(ms) => format!("at({})", format_utc(*ms)),
        }
    }

    /// True for a one-time schedule, which is gone once it has fired.
    pub fn is_once(&self) -> bool {
        matches!(self, When::At(_))
    }

    /// The first firing strictly after `after_ms`, for a schedule created at
    /// `anchor_ms` (a rate counts from there: anchor + 1 period is its first firing).
    /// `None` when it never fires again (a past `at`, a cron whose years are over).
    pub fn next_fire(&self, anchor_ms: u64, after_ms: u64) -> Option<u64> {
        match self {
            When::At(at) => (*at > after_ms).then_some(*at),
            When::Rate { value, unit } => {
                let period = u64::from(*value).checked_mul(unit.ms())?.max(1);
                if after_ms < anchor_ms {
                    return anchor_ms.checked_add(period);
                }
                let k = (after_ms - anchor_ms) / period + 1;
                anchor_ms.checked_add(k.checked_mul(period)?)
            }
            When::Cron(fields) => CronSpec::parse(fields).ok()?.next_after(after_ms),
        }
    }
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression())
    }
}

impl std::str::FromStr for When {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        When::parse(s)
    }
}

impl Serialize for When {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.expression())
    }
}

impl<'de> Deserialize<'de> for When {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        When::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for When {
    fn schema_name() -> Cow<'static, str> {
        "When".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "When the schedule fires, in EventBridge Scheduler syntax (UTC): \
                `cron(min hour day-of-month month day-of-week year)` with exactly one of the \
                day fields `?` (e.g. `cron(0 9 ? * MON-FRI *)`), `rate(N minutes|hours|days)`, \
                `at(yyyy-mm-ddThh:mm:ss)`, or an RFC 3339 time with an offset.",
            "examples": ["cron(0 9 * * ? *)", "rate(5 minutes)", "at(2030-01-01T09:00:00)"]
        })
    }
}

fn parse_rate(body: &str) -> Result<When, ScheduleError> {
    let mut parts = body.split_whitespace();
    let (Some(value), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return err(format!(
            "rate({body}): write rate(<number> minutes|hours|days), e.g. rate(5 minutes)"
        ));
    };
    let Ok(value) = value.parse::<u32>() else {
        return err(format!(
            "rate({body}): {value:?} is not a whole number of {unit}"
        ));
    };
    if value == 0 {
        return err(format!("rate({body}): the rate must be at least 1"));
    }
    let unit = match unit.to_ascii_lowercase().as_str() {
        "minute" | "minutes" => RateUnit::Minutes,
        "hour" | "hours" => RateUnit::Hours,
        "day" | "days" => RateUnit::Days,
        other => {
            return err(format!(
                "rate({body}): unknown unit {other:?}; use minutes, hours or days"
            ));
        }
    };
    Ok(When::Rate { value, unit })
}

// ---- calendar arithmetic (UTC, proleptic Gregorian; Howard Hinnant's algorithms) ----

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Day of week of a day number, 1 = Sunday .. 7 = Saturday (EventBridge's numbering).
fn weekday(days: i64) -> u32 {
    // 1970-01-01 was a Thursday (5).
    ((days + 4).rem_euclid(7) + 1) as u32
}

/// `yyyy-mm-ddThh:mm:ss` in UTC for epoch milliseconds (rounded down to the second).
pub fn format_utc(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `yyyy-mm-ddThh:mm:ss[.fff]` plus, when `offset` (RFC 3339), a required `Z` or
/// `±hh:mm`; without it the time is UTC. Fractions of a second are dropped.
fn parse_datetime(text: &str, offset: bool) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let sep = |i: usize, c: &[u8]| c.contains(b.get(i).unwrap_or(&0));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mo = u32::try_from(mo).ok()?;
    let d = u32::try_from(d).ok()?;
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let shift = if offset {
        match rest {
            "Z" | "z" => 0,
            _ => {
                let sign = match rest.as_bytes().first()? {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let o = &rest[1..];
                if o.len() != 5 || o.as_bytes()[2] != b':' {
                    return None;
                }
                let oh: i64 = o[..2].parse().ok()?;
                let om: i64 = o[3..].parse().ok()?;
                if oh > 23 || om > 59 {
                    return None;
                }
                sign * (oh * 3600 + om * 60)
            }
        }
    } else if rest.is_empty() {
        0
    } else {
        return None;
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - shift;
    u64::try_from(secs).ok()?.checked_mul(1000)
}

// ---- EventBridge cron ----

const FIRST_YEAR: i64 = 1970;
const LAST_YEAR: i64 = 2199;

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A set of small numbers (minutes, hours, days, months, years - 1970).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Bits([u64; 4]);

impl Bits {
    fn set(&mut self, i: u32) {
        self.0[(i / 64) as usize] |= 1 << (i % 64);
    }
    fn has(&self, i: u32) -> bool {
        i < 256 && self.0[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum DaySpec {
    /// `?`: the other day field decides.
    Unspecified,
    /// Days of month (1-31) or of week (1-7).
    Set(Bits),
    /// `L` in day-of-month: the month's last day.
    LastDayOfMonth,
    /// `LW`: the month's last weekday.
    LastWeekdayOfMonth,
    /// `15W`: the weekday (Mon-Fri) nearest the 15th, within the month.
    NearestWeekday(u32),
    /// `6L` in day-of-week: the month's last Friday.
    LastOfMonth(u32),
    /// `6#3`: the month's third Friday.
    Nth(u32, u32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct CronSpec {
    minutes: Bits,
    hours: Bits,
    dom: DaySpec,
    months: Bits,
    dow: DaySpec,
    years: Bits,
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

impl Field {
    fn value(&self, s: &str, whole: &str) -> Result<u32, ScheduleError> {
        let upper = s.to_ascii_uppercase();
        if let Some(i) = self.names.iter().position(|n| *n == upper) {
            return Ok(self.min + i as u32);
        }
        let Ok(v) = s.parse::<u32>() else {
            return err(format!(
                "cron {}: {s:?} in {whole:?} is not a number{}",
                self.name,
                if self.names.is_empty() {
                    String::new()
                } else {
                    format!(" or one of {}", self.names.join(","))
                }
            ));
        };
        if v < self.min || v > self.max {
            return err(format!(
                "cron {}: {v} in {whole:?} is outside {}-{}",
                self.name, self.min, self.max
            ));
        }
        Ok(v)
    }

    /// `*`, `a`, `a-b`, `*/n`, `a/n`, `a-b/n`, comma-separated; values as given.
    fn bits(&self, text: &str) -> Result<Bits, ScheduleError> {
        let mut bits = Bits::default();
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step = s.parse::<u32>().ok().filter(|s| *s > 0);
                    let Some(step) = step else {
                        return err(format!(
                            "cron {}: the step in {part:?} must be a whole number above 0",
                            self.name
                        ));
                    };
                    (r, Some(step))
                }
                None => (part, None),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a, part)?, self.value(b, part)?);
                if a > b {
                    return err(format!(
                        "cron {}: the range {part:?} runs backwards; write it low-high",
                        self.name
                    ));
                }
                (a, b)
            } else {
                let a = self.value(range, part)?;
                // `a/n` runs from a to the end of the field.
                (a, if step.is_some() { self.max } else { a })
            };
            let step = step.unwrap_or(1);
            let mut v = lo;
            while v <= hi {
                bits.set(v - self.min + self.offset());
                v += step;
            }
        }
        Ok(bits)
    }

    /// Years are stored from 0; every other field by its own value.
    fn offset(&self) -> u32 {
        if self.name == "year" { 0 } else { self.min }
    }
}

const MINUTE: Field = Field {
    name: "minutes",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hours",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &MONTHS,
};
const DOW: Field = Field {
    name: "day-of-week",
    min: 1,
    max: 7,
    names: &DAYS,
};
const YEAR: Field = Field {
    name: "year",
    min: FIRST_YEAR as u32,
    max: LAST_YEAR as u32,
    names: &[],
};

impl CronSpec {
    fn parse(body: &str) -> Result<CronSpec, ScheduleError> {
        let f: Vec<&str> = body.split_whitespace().collect();
        if f.len() != 6 {
            return err(format!(
                "cron({body}) has {} fields; EventBridge cron has 6: minutes hours \
                 day-of-month month day-of-week year, e.g. cron(0 9 * * ? *)",
                f.len()
            ));
        }
        let (dom_q, dow_q) = (f[2] == "?", f[4] == "?");
        if dom_q == dow_q {
            return err(format!(
                "cron({body}): exactly one of day-of-month and day-of-week must be `?` \
                 (e.g. cron(0 9 * * ? *) daily, cron(0 9 ? * MON-FRI *) on weekdays)"
            ));
        }
        Ok(CronSpec {
            minutes: MINUTE.bits(f[0])?,
            hours: HOUR.bits(f[1])?,
            dom: if dom_q {
                DaySpec::Unspecified
            } else {
                parse_dom(f[2])?
            },
            months: MONTH.bits(f[3])?,
            dow: if dow_q {
                DaySpec::Unspecified
            } else {
                parse_dow(f[4])?
            },
            years: YEAR.bits(f[5])?,
        })
    }

    fn day_matches(&self, days: i64) -> bool {
        let (y, m, d) = civil_from_days(days);
        if !(FIRST_YEAR..=LAST_YEAR).contains(&y)
            || !self.years.has((y - FIRST_YEAR) as u32)
            || !self.months.has(m)
        {
            return false;
        }
        let last = days_in_month(y, m);
        let wd = weekday(days);
        let is_weekday = |wd: u32| (2..=6).contains(&wd);
        let spec = if self.dom == DaySpec::Unspecified {
            &self.dow
        } else {
            &self.dom
        };
        match spec {
            DaySpec::Unspecified => false,
            DaySpec::Set(bits) => {
                if self.dom == DaySpec::Unspecified {
                    bits.has(wd)
                } else {
                    bits.has(d)
                }
            }
            DaySpec::LastDayOfMonth => d == last,
            DaySpec::LastWeekdayOfMonth => {
                // The last day, stepped back over a weekend.
                let last_wd = weekday(days - i64::from(d) + i64::from(last));
                let target = match last_wd {
                    1 => last - 2,
                    7 => last - 1,
                    _ => last,
                };
                d == target && is_weekday(wd)
            }
            DaySpec::NearestWeekday(n) => {
                let n = (*n).min(last);
                let nth = days - i64::from(d) + i64::from(n);
                let target = match weekday(nth) {
                    // Saturday: the Friday before, or the Monday after the 1st.
                    7 if n == 1 => n + 2,
                    7 => n - 1,
                    // Sunday: the Monday after, or the Friday before the month's end.
                    1 if n == last => n - 2,
                    1 => n + 1,
                    _ => n,
                };
                d == target
            }
            DaySpec::LastOfMonth(w) => wd == *w && d + 7 > last,
            DaySpec::Nth(w, k) => wd == *w && (d - 1) / 7 + 1 == *k,
        }
    }

    /// The first whole minute strictly after `after_ms` that matches, in ms.
    fn next_after(&self, after_ms: u64) -> Option<u64> {
        let start_min = (after_ms / 60_000 + 1) as i64;
        let mut day = start_min.div_euclid(1440);
        let mut from = start_min.rem_euclid(1440) as u32;
        let end = days_from_civil(LAST_YEAR + 1, 1, 1);
        while day < end {
            if self.day_matches(day) {
                for minute_of_day in from..1440 {
                    let (h, m) = (minute_of_day / 60, minute_of_day % 60);
                    if self.hours.has(h) && self.minutes.has(m) {
                        let ms = (day * 1440 + i64::from(minute_of_day)) * 60_000;
                        return u64::try_from(ms).ok();
                    }
                }
            }
            day += 1;
            from = 0;
        }
        None
    }
}

fn parse_dom(text: &str) -> Result<DaySpec, ScheduleError> {
    let upper = text.to_ascii_uppercase();
    if upper == "L" {
        return Ok(DaySpec::LastDayOfMonth);
    }
    if upper == "LW" {
        return Ok(DaySpec::LastWeekdayOfMonth);
    }
    if let Some(n) = upper.strip_suffix('W') {
        return Ok(DaySpec::NearestWeekday(DOM.value(n, text)?));
    }
    if upper.contains(['L', 'W', '#']) {
        return err(format!(
            "cron day-of-month: {text:?}; L, LW and nW (e.g. 15W) stand alone"
        ));
    }
    Ok(DaySpec::Set(DOM.bits(text)?))
}

fn parse_dow(text: &str) -> Result<DaySpec, ScheduleError> {
    let upper = text.to_ascii_uppercase();
    if upper == "L" {
        // The last day of the week: Saturday.
        let mut b = Bits::default();
        b.set(7);
        return Ok(DaySpec::Set(b));
    }
    if let Some((d, k)) = upper.split_once('#') {
        let day = DOW.value(d, text)?;
        let Some(k) = k.parse::<u32>().ok().filter(|k| (1..=5).contains(k)) else {
            return err(format!(
                "cron day-of-week: in {text:?} the number after # must be 1-5"
            ));
        };
        return Ok(DaySpec::Nth(day, k));
    }
    if let Some(d) = upper.strip_suffix('L') {
        return Ok(DaySpec::LastOfMonth(DOW.value(d, text)?));
    }
    Ok(DaySpec::Set(DOW.bits(text)?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(text: &str) -> u64 {
        parse_datetime(text, true).unwrap()
    }

    fn next(expr: &str, after: &str) -> String {
        let w = When::parse(expr).unwrap();
        format_utc(w.next_fire(0, ms(after)).unwrap())
    }

    #[test]
    fn expressions_parse_and_print_canonically() {
        let cases = [
            ("cron(0 9 * * ? *)", "cron(0 9 * * ? *)"),
            ("  CRON( 0  9 ? *  mon-fri * ) ", "cron(0 9 ? * mon-fri *)"),
            ("rate(5 minutes)", "rate(5 minutes)"),
            ("rate(1 minutes)", "rate(1 minute)"),
            ("rate(2 Hour)", "rate(2 hours)"),
            ("rate(1 day)", "rate(1 day)"),
            ("at(2030-01-01T09:00:00)", "at(2030-01-01T09:00:00)"),
            ("2030-01-01T10:00:00+01:00", "at(2030-01-01T09:00:00)"),
            ("2030-01-01t09:00:00.999Z", "at(2030-01-01T09:00:00)"),
            ("2029-12-31T23:30:00-09:30", "at(2030-01-01T09:00:00)"),
        ];
        for (input, canonical) in cases {
            let w = When::parse(input).unwrap();
            assert_eq!(w.expression(), canonical, "{input}");
            assert_eq!(When::parse(&w.expression()).unwrap(), w, "{input}");
        }
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let cases = [
            ("every day", "is not a schedule"),
            ("cron(0 9 * * *)", "has 5 fields"),
            (
                "cron(0 9 * * * *)",
                "exactly one of day-of-month and day-of-week",
            ),
            ("cron(0 9 ? * ? *)", "exactly one of"),
            ("cron(60 9 * * ? *)", "60 in \"60\" is outside 0-59"),
            ("cron(0 9 * FOO ? *)", "not a number or one of JAN"),
            ("cron(0 9 ? * MON#6 *)", "must be 1-5"),
            ("cron(0 9 * * ? 1969)", "outside 1970-2199"),
            ("cron(0 9-5 * * ? *)", "runs backwards"),
            ("cron(*/0 9 * * ? *)", "above 0"),
            ("cron(0 9 * * ? *", "ends with `)`"),
            ("rate(0 minutes)", "at least 1"),
            ("rate(5 weeks)", "unknown unit"),
            ("rate(five minutes)", "not a whole number"),
            ("rate(5)", "rate(<number>"),
            ("at(2030-01-01 09:00)", "at(yyyy-mm-ddThh:mm:ss)"),
            ("at(2030-02-30T09:00:00)", "at(yyyy-mm-ddThh:mm:ss)"),
            ("2030-01-01T09:00:00", "the offset is required"),
        ];
        for (input, wanted) in cases {
            let e = When::parse(input).unwrap_err().to_string();
            assert!(e.contains(wanted), "{input}: {e}");
        }
    }

    #[test]
    fn cron_next_fire_follows_eventbridge_semantics() {
        // Daily at 09:00.
        assert_eq!(
            next("cron(0 9 * * ? *)", "2030-01-01T08:59:59Z"),
            "2030-01-01T09:00:00"
        );
        // Strictly after: at 09:00 exactly, the next is tomorrow.
        assert_eq!(
            next("cron(0 9 * * ? *)", "2030-01-01T09:00:00Z"),
            "2030-01-02T09:00:00"
        );
        // Every 15 minutes.
        assert_eq!(
            next("cron(0/15 * * * ? *)", "2030-01-01T10:07:00Z"),
            "2030-01-01T10:15:00"
        );
        // Weekdays: 2030-01-05 is a Saturday, so Monday the 7th.
        assert_eq!(
            next("cron(30 8 ? * MON-FRI *)", "2030-01-04T09:00:00Z"),
            "2030-01-07T08:30:00"
        );
        // 1 = Sunday.
        assert_eq!(
            next("cron(0 0 ? * 1 *)", "2030-01-01T00:00:00Z"),
            "2030-01-06T00:00:00"
        );
        // Last day of February in a leap year.
        assert_eq!(
            next("cron(0 12 L 2 ? *)", "2028-01-01T00:00:00Z"),
            "2028-02-29T12:00:00"
        );
        // Last Friday of the month: January 2030 ends on Thursday the 31st.
        assert_eq!(
            next("cron(0 17 ? * 6L *)", "2030-01-01T00:00:00Z"),
            "2030-01-25T17:00:00"
        );
        // Second Tuesday.
        assert_eq!(
            next("cron(0 10 ? * TUE#2 *)", "2030-01-01T00:00:00Z"),
            "2030-01-08T10:00:00"
        );
        // Weekday nearest the 5th (a Saturday): Friday the 4th.
        assert_eq!(
            next("cron(0 10 5W * ? *)", "2030-01-01T00:00:00Z"),
            "2030-01-04T10:00:00"
        );
        // Last weekday: 2030-03-31 is a Sunday, so Friday the 29th.
        assert_eq!(
            next("cron(0 10 LW 3 ? *)", "2030-01-01T00:00:00Z"),
            "2030-03-29T10:00:00"
        );
        // Years: only 2031.
        assert_eq!(
            next("cron(0 0 1 JAN ? 2031)", "2030-06-01T00:00:00Z"),
            "2031-01-01T00:00:00"
        );
        let gone = When::parse("cron(0 0 1 JAN ? 2020)").unwrap();
        assert_eq!(gone.next_fire(0, ms("2030-01-01T00:00:00Z")), None);
        let never = When::parse("cron(0 0 30 2 ? *)").unwrap();
        assert_eq!(never.next_fire(0, 0), None);
    }

    #[test]
    fn rate_counts_from_creation_and_at_fires_once() {
        let w = When::parse("rate(5 minutes)").unwrap();
        let created = 1_000;
        assert_eq!(w.next_fire(created, 0), Some(created + 300_000));
        assert_eq!(w.next_fire(created, created), Some(created + 300_000));
        assert_eq!(
            w.next_fire(created, created + 300_000),
            Some(created + 600_000)
        );
        assert_eq!(
            w.next_fire(created, created + 299_999),
            Some(created + 300_000)
        );
        let at = When::parse("at(2030-01-01T09:00:00)").unwrap();
        let t = ms("2030-01-01T09:00:00Z");
        assert_eq!(at.next_fire(0, t - 1), Some(t));
        assert_eq!(at.next_fire(0, t), None);
        assert!(at.is_once() && !w.is_once());
    }

    #[test]
    fn schedules_serialise_with_the_expression_and_reject_bad_ones() {
        let s = Schedule::new(
            "acme",
            AgentName::new("primary").unwrap(),
            ScheduleKind::Wakeup,
            "check the inbox",
            When::parse("rate(1 hour)").unwrap(),
            "alice",
            1_700_000_000_000,
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["when"], "rate(1 hour)");
        assert_eq!(json["kind"], "wakeup");
        assert_eq!(json["agent"], "primary");
        let back: Schedule = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.task_input(), "Scheduled wake-up: check the inbox");
        let mut bad = json;
        bad["when"] = "rate(0 minutes)".into();
        let e = serde_json::from_value::<Schedule>(bad).unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
        let schema = serde_json::to_value(schemars::schema_for!(Schedule)).unwrap();
        assert_eq!(schema["properties"]["agent"]["type"], "string");
    }

    #[test]
    fn a_firing_payload_carries_the_schedule_and_reads_hand_written_ones() {
        let s = Schedule::new(
            "acme",
            AgentName::new("weather").unwrap(),
            ScheduleKind::Wakeup,
            "look outside",
            When::parse("cron(0 7 * * ? *)").unwrap(),
            "bob",
            1_700_000_000_000,
        );
        let payload = ScheduledTask::of(&s);
        let json = serde_json::to_string(&payload).unwrap();
        let back: ScheduledTask = serde_json::from_str(&json).unwrap();
        assert_eq!(back.task_input(), "Scheduled wake-up: look outside");
        assert_eq!(back.to_schedule(s.when.clone(), 0), Some(s));

        let by_hand: ScheduledTask = serde_json::from_str(r#"{"input": "briefing"}"#).unwrap();
        assert_eq!(
            (
                by_hand.agent.as_str(),
                by_hand.tenant.as_str(),
                by_hand.kind
            ),
            ("primary", "default", ScheduleKind::Task)
        );
        assert_eq!(by_hand.task_input(), "briefing");
        assert_eq!(by_hand.to_schedule(When::At(0), 0), None);
        assert!(serde_json::from_str::<ScheduledTask>(r#"{"input": "x", "extra": 1}"#).is_err());
    }

    #[test]
    fn weekdays_and_calendar_agree() {
        // 2030-01-01 is a Tuesday (3); 1970-01-01 a Thursday (5).
        assert_eq!(weekday(days_from_civil(2030, 1, 1)), 3);
        assert_eq!(weekday(0), 5);
        for d in [-1000, 0, 59, 10_957, 60_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }
}
