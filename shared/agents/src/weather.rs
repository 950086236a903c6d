//! `get_weather`: current conditions for a city from Open-Meteo, in two calls (geocoding
//! turns the name into coordinates, then the forecast API gives the current values).
//! The rule it keeps: an answer is either live, and says "Open-Meteo" with the local
//! time of the reading, or it comes from the bundled, hand-written samples in
//! `data/open-meteo-samples.json` and says "bundled sample data — not live". The
//! samples are in Open-Meteo's own response shape and go through the same parsing
//! code. A city the live service does not know is an error, never a sample.

use crate::ToolsConfig;
use aos_kernel::llm::ToolSpec;
use aos_kernel::tools::{Tool, ToolContext, ToolError, ToolMeta};
use async_trait::async_trait;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::OnceLock;

/// The tool's name, as agent definitions list it.
pub const NAME: &str = "get_weather";

/// Longest city argument accepted; real place names are far shorter.
const MAX_CITY_CHARS: usize = 100;
/// Geocoding candidates fetched when the caller narrows the city ("Paris, Texas").
const HINTED_CANDIDATES: u8 = 10;
const CURRENT_FIELDS: &str = "temperature_2m,relative_humidity_2m,weather_code,wind_speed_10m";
const SAMPLES_JSON: &str = include_str!("../data/open-meteo-samples.json");

/// The `get_weather` tool. Cheap to clone; holds the shared HTTP client.
#[derive(Clone, Debug)]
pub struct WeatherTool {
    source: Source,
}

#[derive(Clone, Debug)]
enum Source {
    Live {
        client: reqwest::Client,
        geocoding_base: String,
        open_meteo_base: String,
    },
    /// Samples only; the reason goes into every answer's label.
    Samples { reason: String },
}

impl WeatherTool {
    /// Calls Open-Meteo at the bases in `cfg` with `client` (whose timeouts apply), or
    /// answers from the samples alone when `cfg.offline` is set.
    pub fn new(cfg: &ToolsConfig, client: reqwest::Client) -> Self {
        let source = if cfg.offline {
            Source::Samples {
                reason: "live weather switched off by configuration".into(),
            }
        } else {
            Source::Live {
                client,
                geocoding_base: cfg.geocoding_base.trim_end_matches('/').to_string(),
                open_meteo_base: cfg.open_meteo_base.trim_end_matches('/').to_string(),
            }
        };
        Self { source }
    }

    /// Answers from the samples alone; `reason` says why, in every answer.
    pub fn without_network(reason: impl Into<String>) -> Self {
        Self {
            source: Source::Samples {
                reason: reason.into(),
            },
        }
    }

    /// The one-line answer for `city`.
    pub async fn report(&self, city: &str) -> Result<String, ToolError> {
        let query = CityQuery::parse(city)?;
        match &self.source {
            Source::Samples { reason } => from_samples(&query, reason, None),
            Source::Live {
                client,
                geocoding_base,
                open_meteo_base,
            } => match live(client, geocoding_base, open_meteo_base, &query).await {
                Ok(line) => Ok(line),
                Err(Failure::Rejected(e)) => Err(e),
                Err(Failure::Unavailable { reason, place }) => {
                    tracing::warn!(city = %query.raw, %reason, "Open-Meteo unavailable; answering from bundled samples");
                    from_samples(&query, &format!("Open-Meteo {reason}"), place.as_deref())
                }
            },
        }
    }
}

#[derive(Deserialize)]
struct Input {
    city: String,
}

#[async_trait]
impl Tool for WeatherTool {
    /// Without the network it answers from bundled samples alone: a pure lookup,
    /// not worth journaling. Live, it is a read-only call whose result is journaled.
    fn meta(&self) -> ToolMeta {
        match self.source {
            Source::Samples { .. } => ToolMeta::pure(),
            Source::Live { .. } => ToolMeta::default(),
        }
    }
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: NAME.into(),
            description: "Current weather for one city from Open-Meteo: temperature, \
                conditions, humidity and wind, with the local time of the reading. If the \
                live service is unreachable the answer comes from bundled sample data and \
                says so; report that to the user."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "city": {
                        "type": "string",
                        "description": "City name, optionally narrowed by country or region \
                            after a comma, e.g. \"Paris\" or \"Paris, Texas\"."
                    }
                },
                "required": ["city"],
                "additionalProperties": false
            }),
        }
    }

    async fn call(&self, input: Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        let input: Input = serde_json::from_value(input).map_err(|e| {
            ToolError(format!(
                "{NAME} takes {{\"city\": \"<name>\"}}; the input given does not fit: {e}"
            ))
        })?;
        self.report(&input.city).await
    }
}

/// What the caller asked for: a name, and optionally a country or region after a comma.
#[derive(Debug)]
struct CityQuery {
    raw: String,
    name: String,
    hint: Option<String>,
}

impl CityQuery {
    fn parse(city: &str) -> Result<Self, ToolError> {
        let raw = city.trim();
        if raw.is_empty() {
            return Err(ToolError(
                "no city given; pass a city name such as \"Paris\"".into(),
            ));
        }
        if raw.chars().count() > MAX_CITY_CHARS {
            return Err(ToolError(format!(
                "the city name is longer than {MAX_CITY_CHARS} characters; pass one city name"
            )));
        }
        if raw.chars().any(char::is_control) {
            return Err(ToolError(
                "the city name contains control characters".into(),
            ));
        }
        let (name, hint) = match raw.split_once(',') {
            Some((name, hint)) => (name.trim(), Some(hint.trim()).filter(|h| !h.is_empty())),
            None => (raw, None),
        };
        if name.is_empty() {
            return Err(ToolError(format!(
                "{raw:?} has no city name before the comma"
            )));
        }
        Ok(Self {
            raw: raw.to_string(),
            name: name.to_string(),
            hint: hint.map(str::to_string),
        })
    }

    /// Whether `place` is in the country or region the caller named, if any.
    fn fits(&self, place: &Place) -> bool {
        let Some(hint) = &self.hint else {
            return true;
        };
        let hint = fold(hint);
        [&place.country, &place.country_code, &place.admin1]
            .into_iter()
            .flatten()
            .any(|field| fold(field) == hint)
    }
}

/// Why the live path gave no answer.
enum Failure {
    /// Open-Meteo answered, and the answer is final (an unknown city, a bad request).
    Rejected(ToolError),
    /// Open-Meteo could not be asked (connect, DNS, timeout, 5xx, unreadable body);
    /// `place` is the geocoded name when geocoding got that far.
    Unavailable {
        reason: String,
        place: Option<String>,
    },
}

fn unavailable(reason: impl Into<String>) -> Failure {
    Failure::Unavailable {
        reason: reason.into(),
        place: None,
    }
}

async fn live(
    client: &reqwest::Client,
    geocoding_base: &str,
    open_meteo_base: &str,
    query: &CityQuery,
) -> Result<String, Failure> {
    let count = if query.hint.is_some() {
        HINTED_CANDIDATES
    } else {
        1
    };
    let geo: GeocodingResponse = get_json(
        client
            .get(format!("{geocoding_base}/v1/search"))
            .query(&[
                ("name", query.name.as_str()),
                ("language", "en"),
                ("format", "json"),
            ])
            .query(&[("count", count)]),
    )
    .await?;
    let place = choose_place(query, geo).map_err(Failure::Rejected)?;
    let forecast: ForecastResponse = get_json(
        client
            .get(format!("{open_meteo_base}/v1/forecast"))
            .query(&[("latitude", place.latitude), ("longitude", place.longitude)])
            .query(&[("current", CURRENT_FIELDS), ("timezone", "auto")]),
    )
    .await
    .map_err(|f| match f {
        Failure::Unavailable { reason, .. } => Failure::Unavailable {
            reason,
            place: Some(place.name.clone()),
        },
        rejected => rejected,
    })?;
    Ok(format!(
        "{} (Open-Meteo, {} local)",
        describe(&place, &forecast),
        forecast.current.time
    ))
}

/// Sends `req` and reads a JSON body of type `T`, sorting failures into final answers
/// and reasons to fall back.
async fn get_json<T: DeserializeOwned>(req: reqwest::RequestBuilder) -> Result<T, Failure> {
    let resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            unavailable("timed out")
        } else if e.is_connect() {
            unavailable("unreachable")
        } else {
            unavailable(format!("request failed ({e})"))
        }
    })?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| {
        if e.is_timeout() {
            unavailable("timed out")
        } else {
            unavailable("sent an incomplete response")
        }
    })?;
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(unavailable(format!("returned HTTP {}", status.as_u16())));
    }
    if !status.is_success() {
        // Open-Meteo explains a rejected request as {"error": true, "reason": "..."}.
        let reason = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| "no reason given".into());
        return Err(Failure::Rejected(ToolError(format!(
            "Open-Meteo rejected the request (HTTP {}): {reason}",
            status.as_u16()
        ))));
    }
    serde_json::from_slice(&body).map_err(|e| {
        tracing::warn!(error = %e, "unreadable Open-Meteo response");
        unavailable("sent an unreadable response")
    })
}

fn choose_place(query: &CityQuery, geo: GeocodingResponse) -> Result<Place, ToolError> {
    let first = geo.results.first().map(|p| p.label());
    match geo.results.into_iter().find(|p| query.fits(p)) {
        Some(place) => Ok(place),
        None => Err(ToolError(match (first, &query.hint) {
            (Some(found), Some(hint)) => format!(
                "Open-Meteo knows {:?} only outside {hint:?} (e.g. {found}); check the \
                 country or region after the comma",
                query.name
            ),
            _ => format!(
                "Open-Meteo's geocoding found no place called {:?}; check the spelling, or \
                 name the nearest large city",
                query.name
            ),
        })),
    }
}

/// Answers from the bundled samples, or explains that the city is not among them.
/// `place` is the name the live geocoding resolved, when it got that far.
fn from_samples(query: &CityQuery, reason: &str, place: Option<&str>) -> Result<String, ToolError> {
    let samples = samples()?;
    let wanted: Vec<String> = [Some(query.name.as_str()), place]
        .into_iter()
        .flatten()
        .map(fold)
        .collect();
    let hit = samples.iter().find_map(|s| {
        let p = s.geocoding.results.first()?;
        let names = std::iter::once(&p.name).chain(&s.aliases);
        let matches = names.map(|n| fold(n)).any(|n| wanted.contains(&n));
        (matches && query.fits(p)).then_some((p, &s.forecast))
    });
    match hit {
        Some((place, forecast)) => Ok(format!(
            "{} (offline: {reason}, bundled sample data — not live)",
            describe(place, forecast)
        )),
        None => {
            let known: Vec<&str> = samples
                .iter()
                .filter_map(|s| s.geocoding.results.first())
                .map(|p| p.name.as_str())
                .collect();
            Err(ToolError(format!(
                "no live weather: {reason}, and {:?} is not among the bundled offline \
                 samples, which cover only {}",
                query.raw,
                known.join(", ")
            )))
        }
    }
}

/// The sample file, parsed once. It is embedded and tested, so an error here is a bug,
/// reported to the model rather than panicking a wake.
fn samples() -> Result<&'static [Sample], ToolError> {
    static SAMPLES: OnceLock<Result<Vec<Sample>, String>> = OnceLock::new();
    SAMPLES
        .get_or_init(|| {
            serde_json::from_str::<SampleFile>(SAMPLES_JSON)
                .map(|f| f.samples)
                .map_err(|e| e.to_string())
        })
        .as_deref()
        .map_err(|e| ToolError(format!("the bundled weather samples are unreadable: {e}")))
}

/// `Paris, France: 11.4 °C, overcast, humidity 81%, wind 14.0 km/h`
fn describe(place: &Place, f: &ForecastResponse) -> String {
    let c = &f.current;
    let u = &f.current_units;
    let mut parts = Vec::new();
    if let Some(t) = c.temperature_2m {
        parts.push(format!("{t:.1}{}", unit(&u.temperature_2m)));
    }
    if let Some(code) = c.weather_code {
        parts.push(wmo_description(code));
    }
    if let Some(h) = c.relative_humidity_2m {
        parts.push(format!("humidity {h:.0}{}", unit(&u.relative_humidity_2m)));
    }
    if let Some(w) = c.wind_speed_10m {
        parts.push(format!("wind {w:.1}{}", unit(&u.wind_speed_10m)));
    }
    if parts.is_empty() {
        parts.push("no current values reported".into());
    }
    format!("{}: {}", place.label(), parts.join(", "))
}

/// A unit as written after a number: `%` sticks to it, words get a space.
fn unit(u: &str) -> String {
    if u == "%" {
        u.to_string()
    } else {
        format!(" {u}")
    }
}

/// Words for a WMO weather interpretation code, as Open-Meteo documents them.
fn wmo_description(code: u16) -> String {
    let words = match code {
        0 => "clear sky",
        1 => "mainly clear",
        2 => "partly cloudy",
        3 => "overcast",
        45 => "fog",
        48 => "depositing rime fog",
        51 => "light drizzle",
        53 => "moderate drizzle",
        55 => "dense drizzle",
        56 => "light freezing drizzle",
        57 => "dense freezing drizzle",
        61 => "slight rain",
        63 => "moderate rain",
        65 => "heavy rain",
        66 => "light freezing rain",
        67 => "heavy freezing rain",
        71 => "slight snowfall",
        73 => "moderate snowfall",
        75 => "heavy snowfall",
        77 => "snow grains",
        80 => "slight rain showers",
        81 => "moderate rain showers",
        82 => "violent rain showers",
        85 => "slight snow showers",
        86 => "heavy snow showers",
        95 => "thunderstorm",
        96 => "thunderstorm with slight hail",
        99 => "thunderstorm with heavy hail",
        other => return format!("weather code {other}"),
    };
    words.to_string()
}

/// Case, accent and spacing-insensitive form of a name, so "sao  paulo" finds "São Paulo".
fn fold(s: &str) -> String {
    let folded: String = s
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => 'a',
            'ç' => 'c',
            'è' | 'é' | 'ê' | 'ë' => 'e',
            'ì' | 'í' | 'î' | 'ï' => 'i',
            'ñ' => 'n',
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' => 'o',
            'ù' | 'ú' | 'û' | 'ü' => 'u',
            'ý' | 'ÿ' => 'y',
            '-' | '.' => ' ',
            c => c,
        })
        .collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

// Open-Meteo's wire shapes; only the fields this tool reads.

#[derive(Debug, Deserialize)]
struct GeocodingResponse {
    /// Absent when nothing matched.
    #[serde(default)]
    results: Vec<Place>,
}

#[derive(Debug, Deserialize)]
struct Place {
    name: String,
    latitude: f64,
    longitude: f64,
    #[serde(default)]
    country: Option<String>,
    #[serde(default)]
    country_code: Option<String>,
    /// First-level region (state, province), used to match a hint like "Texas".
    #[serde(default)]
    admin1: Option<String>,
}

impl Place {
    fn label(&self) -> String {
        match &self.country {
            Some(country) => format!("{}, {country}", self.name),
            None => self.name.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ForecastResponse {
    current: Current,
    #[serde(default)]
    current_units: Units,
}

#[derive(Debug, Deserialize)]
struct Current {
    /// Local time of the reading (the request asks for `timezone=auto`).
    time: String,
    temperature_2m: Option<f64>,
    relative_humidity_2m: Option<f64>,
    weather_code: Option<u16>,
    wind_speed_10m: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Units {
    temperature_2m: String,
    relative_humidity_2m: String,
    wind_speed_10m: String,
}

impl Default for Units {
    fn default() -> Self {
        Self {
            temperature_2m: "°C".into(),
            relative_humidity_2m: "%".into(),
            wind_speed_10m: "km/h".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct SampleFile {
    samples: Vec<Sample>,
}

#[derive(Debug, Deserialize)]
struct Sample {
    /// Other names that find this sample ("NYC", "Bombay").
    #[serde(default)]
    aliases: Vec<String>,
    geocoding: GeocodingResponse,
    forecast: ForecastResponse,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn offline() -> WeatherTool {
        WeatherTool::new(
            &ToolsConfig {
                offline: true,
                ..ToolsConfig::default()
            },
            reqwest::Client::new(),
        )
    }

    #[test]
    fn every_sample_parses_and_renders() {
        let samples = samples().unwrap();
        assert!(samples.len() >= 12, "{} samples", samples.len());
        for s in samples {
            assert_eq!(s.geocoding.results.len(), 1);
            let line = describe(&s.geocoding.results[0], &s.forecast);
            assert!(!line.contains("weather code"), "{line}");
            assert!(!line.contains("no current values"), "{line}");
        }
    }

    #[tokio::test]
    async fn offline_mode_answers_from_samples_and_says_so() {
        let line = offline().report("paris").await.unwrap();
        assert_eq!(
            line,
            "Paris, France: 11.4 °C, overcast, humidity 81%, wind 14.0 km/h \
             (offline: live weather switched off by configuration, bundled sample data — not live)"
        );
        let line = offline().report("Sao Paulo").await.unwrap();
        assert!(line.starts_with("São Paulo, Brazil: "), "{line}");
        let line = offline().report("NYC").await.unwrap();
        assert!(line.starts_with("New York, United States: "), "{line}");
        let line = offline().report("San Francisco, California").await.unwrap();
        assert!(line.starts_with("San Francisco, United States: "), "{line}");
    }

    #[tokio::test]
    async fn offline_mode_refuses_cities_it_has_no_sample_for() {
        let err = offline().report("Reykjavik").await.unwrap_err().0;
        assert!(
            err.contains("\"Reykjavik\" is not among the bundled offline samples"),
            "{err}"
        );
        assert!(err.contains("Paris") && err.contains("São Paulo"), "{err}");
        // A hint that contradicts the sample is not quietly ignored.
        assert!(offline().report("Paris, Texas").await.is_err());
    }

    #[test]
    fn rejects_unusable_city_arguments() {
        for bad in ["", "   ", ", France"] {
            assert!(CityQuery::parse(bad).is_err(), "{bad:?}");
        }
        assert!(CityQuery::parse(&"x".repeat(101)).is_err());
        let q = CityQuery::parse(" Paris , Texas ").unwrap();
        assert_eq!(
            (q.name.as_str(), q.hint.as_deref()),
            ("Paris", Some("Texas"))
        );
    }

    #[test]
    fn names_weather_codes() {
        assert_eq!(wmo_description(0), "clear sky");
        assert_eq!(wmo_description(3), "overcast");
        assert_eq!(wmo_description(48), "depositing rime fog");
        assert_eq!(wmo_description(65), "heavy rain");
        assert_eq!(wmo_description(86), "heavy snow showers");
        assert_eq!(wmo_description(99), "thunderstorm with heavy hail");
        assert_eq!(wmo_description(42), "weather code 42");
    }

    #[test]
    fn folds_case_accents_and_spacing() {
        assert_eq!(fold("  São   Paulo "), "sao paulo");
        assert_eq!(fold("Île-de-France"), "ile de france");
    }
}
