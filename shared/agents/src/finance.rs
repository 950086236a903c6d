//! The finance tools: `convert_currency`, `calculator` and `check_invoice`. The rule
//! they keep: the model never does arithmetic, and never presents a sample as a market
//! price. Conversions use a bundled table of reference rates, hand-entered and labelled
//! "bundled reference-rate sample, not live" in every answer; the calculator is a
//! recursive-descent evaluator with no access to anything but numbers; invoice checks
//! run in integer cents, so they are exact to the cent.

use aos_kernel::llm::ToolSpec;
use aos_kernel::tools::{Tool, ToolContext, ToolError, ToolMeta};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

/// Tool names, as agent definitions list them.
pub const CONVERT_CURRENCY: &str = "convert_currency";
pub const CALCULATOR: &str = "calculator";
pub const CHECK_INVOICE: &str = "check_invoice";

/// Said in every conversion, because these rates are a sample, not a feed.
pub const RATES_LABEL: &str = "bundled reference-rate sample, not live";

/// Longest expression the calculator accepts; it bounds the evaluator's recursion.
pub const MAX_EXPRESSION_CHARS: usize = 256;

/// Largest amount converted; beyond it an `f64` no longer holds every cent.
const MAX_AMOUNT: f64 = 1e12;
/// Most lines an invoice check takes.
const MAX_INVOICE_LINES: usize = 200;

// ---------------------------------------------------------------------------------
// convert_currency

/// One row of the bundled rate table.
struct Rate {
    code: &'static str,
    /// Units of this currency for one euro. Hand-entered approximations of ECB-style
    /// reference rates, for demos and tests; not a quote from any date.
    per_eur: f64,
    /// Minor-unit digits shown for amounts in this currency.
    decimals: usize,
}

/// Shorthand that keeps the table one row per currency.
const fn row(code: &'static str, per_eur: f64, decimals: usize) -> Rate {
    Rate {
        code,
        per_eur,
        decimals,
    }
}

const RATES: &[Rate] = &[
    row("EUR", 1.0, 2),
    row("USD", 1.0850, 2),
    row("GBP", 0.8550, 2),
    row("JPY", 162.50, 0),
    row("CHF", 0.9600, 2),
    row("CAD", 1.4750, 2),
    row("AUD", 1.6500, 2),
    row("NZD", 1.7900, 2),
    row("CNY", 7.8500, 2),
    row("INR", 90.50, 2),
    row("SEK", 11.35, 2),
    row("NOK", 11.65, 2),
    row("DKK", 7.4600, 2),
    row("PLN", 4.3000, 2),
    row("BRL", 5.9000, 2),
    row("MXN", 19.50, 2),
    row("SGD", 1.4600, 2),
    row("HKD", 8.4800, 2),
    row("KRW", 1470.0, 0),
    row("ZAR", 20.00, 2),
];

/// The currency codes the bundled table covers, in table order.
pub fn currency_codes() -> impl Iterator<Item = &'static str> {
    RATES.iter().map(|r| r.code)
}

fn rate(code: &str, role: &str) -> Result<&'static Rate, ToolError> {
    let code = code.trim();
    if code.len() != 3 || !code.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(ToolError(format!(
            "{role} currency {code:?} is not a currency code; use three letters, e.g. EUR or USD"
        )));
    }
    let upper = code.to_ascii_uppercase();
    RATES.iter().find(|r| r.code == upper).ok_or_else(|| {
        ToolError(format!(
            "no reference rate for {upper} ({role} currency); the bundled sample covers {}",
            currency_codes().collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Converts `amount` of `from` into `to` at the bundled reference rates and says how:
/// `1250.00 EUR = 1356.25 USD at 1 EUR = 1.0850 USD (bundled reference-rate sample, not live)`.
pub fn convert(amount: f64, from: &str, to: &str) -> Result<String, ToolError> {
    if !amount.is_finite() {
        return Err(ToolError("the amount must be a finite number".into()));
    }
    if amount < 0.0 {
        return Err(ToolError(format!(
            "the amount must not be negative (got {amount}); convert the absolute value"
        )));
    }
    if amount > MAX_AMOUNT {
        return Err(ToolError(format!(
            "the amount {amount} is larger than this tool handles (at most 1e12)"
        )));
    }
    let from = rate(from, "source")?;
    let to = rate(to, "target")?;
    let unit_rate = to.per_eur / from.per_eur;
    let converted = amount * unit_rate;
    Ok(format!(
        "{} {} = {} {} at 1 {} = {} {} ({RATES_LABEL})",
        fixed(amount, from.decimals),
        from.code,
        fixed(converted, to.decimals),
        to.code,
        from.code,
        fixed(unit_rate, rate_decimals(unit_rate)),
        to.code,
    ))
}

/// Digits after the point that show a rate to at least five significant digits.
fn rate_decimals(rate: f64) -> usize {
    let magnitude = rate.abs().log10().floor();
    if magnitude.is_finite() && magnitude < 0.0 {
        // e.g. 0.0061538: magnitude -3, so 4 + 3 decimals.
        (4.0 - magnitude).min(12.0) as usize
    } else {
        4
    }
}

/// `x` to `decimals` places, rounding half away from zero in decimal terms: binary
/// floating point stores a decimal tie like 1.005 as 1.00499999…, and a relative nudge
/// far below a cent restores the tie without moving any other value.
fn fixed(x: f64, decimals: usize) -> String {
    let nudged = x * (1.0 + 1e-12 * x.signum());
    format!("{nudged:.decimals$}")
}

#[derive(Deserialize)]
struct ConvertInput {
    amount: Value,
    from: String,
    to: String,
}

/// The `convert_currency` tool.
#[derive(Clone, Copy, Debug, Default)]
pub struct CurrencyTool;

#[async_trait]
impl Tool for CurrencyTool {
    fn meta(&self) -> ToolMeta {
        ToolMeta::pure()
    }
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: CONVERT_CURRENCY.into(),
            description: format!(
                "Converts an amount between currencies at a bundled table of reference \
                 rates (a sample for demos, not live market rates; the answer says so). \
                 Known codes: {}.",
                currency_codes().collect::<Vec<_>>().join(", ")
            ),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "amount": {"type": "number", "minimum": 0, "description": "Amount in the source currency."},
                    "from": {"type": "string", "pattern": "^[A-Za-z]{3}$", "description": "Source currency, ISO 4217 code, e.g. EUR."},
                    "to": {"type": "string", "pattern": "^[A-Za-z]{3}$", "description": "Target currency, ISO 4217 code, e.g. USD."}
                },
                "required": ["amount", "from", "to"],
                "additionalProperties": false
            }),
        }
    }

    async fn call(&self, input: Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        let input: ConvertInput = serde_json::from_value(input).map_err(|e| {
            ToolError(format!(
                "{CONVERT_CURRENCY} takes {{\"amount\": <number>, \"from\": \"EUR\", \"to\": \"USD\"}}: {e}"
            ))
        })?;
        let amount = match &input.amount {
            Value::Number(n) => n.as_f64(),
            // Models sometimes quote numbers; "1,250.50" is still unambiguous.
            Value::String(s) => s.trim().replace([',', '_'], "").parse::<f64>().ok(),
            _ => None,
        }
        .ok_or_else(|| ToolError(format!("the amount {} is not a number", input.amount)))?;
        convert(amount, &input.from, &input.to)
    }
}

// ---------------------------------------------------------------------------------
// calculator

/// Why an expression could not be evaluated; each message tells the model what to fix.
/// Positions count characters from 1.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalcError {
    #[error("the expression is empty")]
    Empty,
    #[error("the expression is {0} characters long; the limit is {MAX_EXPRESSION_CHARS}")]
    TooLong(usize),
    #[error(
        "unexpected character {ch:?} at position {at}; use numbers, + - * / % ^ and parentheses{hint}"
    )]
    BadChar {
        ch: char,
        at: usize,
        hint: &'static str,
    },
    #[error("malformed number {text:?} at position {at}")]
    BadNumber { text: String, at: usize },
    #[error("unexpected {found:?} at position {at}")]
    Unexpected { found: String, at: usize },
    #[error("the expression ends too early: a number is missing after the last operator")]
    UnexpectedEnd,
    #[error("unbalanced parentheses: the '(' at position {0} is never closed")]
    Unclosed(usize),
    #[error("unbalanced parentheses: the ')' at position {0} has no matching '('")]
    Unopened(usize),
    #[error("division by zero")]
    DivisionByZero,
    #[error("remainder (%) by zero")]
    RemainderByZero,
    #[error("the result is too large to represent")]
    Overflow,
    #[error("the result is not a real number (e.g. a fractional power of a negative number)")]
    NotReal,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Num(f64),
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Caret,
    Open,
    Close,
}

impl Tok {
    fn text(self) -> String {
        match self {
            Tok::Num(n) => format_number(n),
            Tok::Plus => "+".into(),
            Tok::Minus => "-".into(),
            Tok::Star => "*".into(),
            Tok::Slash => "/".into(),
            Tok::Percent => "%".into(),
            Tok::Caret => "^".into(),
            Tok::Open => "(".into(),
            Tok::Close => ")".into(),
        }
    }
}

/// Tokens with their 1-based character positions.
fn tokenize(expr: &str) -> Result<Vec<(Tok, usize)>, CalcError> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at = i + 1;
        let tok = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '0'..='9' | '.' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let n = text
                    .parse::<f64>()
                    .map_err(|_| CalcError::BadNumber { text, at })?;
                out.push((Tok::Num(n), at));
                continue;
            }
            '+' => Tok::Plus,
            '-' | '−' => Tok::Minus,
            '*' | '×' => Tok::Star,
            '/' | '÷' => Tok::Slash,
            '%' => Tok::Percent,
            '^' => Tok::Caret,
            '(' => Tok::Open,
            ')' => Tok::Close,
            ch => {
                let hint = match ch {
                    ',' => " (write numbers without thousands separators)",
                    'e' | 'E' => " (scientific notation is not supported)",
                    _ => "",
                };
                return Err(CalcError::BadChar { ch, at, hint });
            }
        };
        out.push((tok, at));
        i += 1;
    }
    Ok(out)
}

/// Recursive descent over the grammar
///
/// ```text
/// expr    = term (("+" | "-") term)*
/// term    = unary (("*" | "/" | "%") unary)*
/// unary   = ("-" | "+") unary | power
/// power   = primary ("^" unary)?        right-associative; -2^2 = -(2^2)
/// primary = number | "(" expr ")"
/// ```
struct Parser {
    tokens: Vec<(Tok, usize)>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<Tok> {
        self.tokens.get(self.pos).map(|(t, _)| *t)
    }

    fn next(&mut self) -> Option<(Tok, usize)> {
        let t = self.tokens.get(self.pos).copied();
        self.pos += 1;
        t
    }

    fn expr(&mut self) -> Result<f64, CalcError> {
        let mut acc = self.term()?;
        while let Some(op @ (Tok::Plus | Tok::Minus)) = self.peek() {
            self.pos += 1;
            let rhs = self.term()?;
            acc = checked(if op == Tok::Plus {
                acc + rhs
            } else {
                acc - rhs
            })?;
        }
        Ok(acc)
    }

    fn term(&mut self) -> Result<f64, CalcError> {
        let mut acc = self.unary()?;
        while let Some(op @ (Tok::Star | Tok::Slash | Tok::Percent)) = self.peek() {
            self.pos += 1;
            let rhs = self.unary()?;
            acc = match op {
                Tok::Star => checked(acc * rhs)?,
                Tok::Slash if rhs == 0.0 => return Err(CalcError::DivisionByZero),
                Tok::Slash => checked(acc / rhs)?,
                _ if rhs == 0.0 => return Err(CalcError::RemainderByZero),
                _ => checked(acc % rhs)?,
            };
        }
        Ok(acc)
    }

    fn unary(&mut self) -> Result<f64, CalcError> {
        match self.peek() {
            Some(Tok::Minus) => {
                self.pos += 1;
                Ok(-self.unary()?)
            }
            Some(Tok::Plus) => {
                self.pos += 1;
                self.unary()
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Result<f64, CalcError> {
        let base = self.primary()?;
        if self.peek() == Some(Tok::Caret) {
            self.pos += 1;
            let exp = self.unary()?;
            return checked(base.powf(exp));
        }
        Ok(base)
    }

    fn primary(&mut self) -> Result<f64, CalcError> {
        match self.next() {
            Some((Tok::Num(n), _)) => Ok(n),
            Some((Tok::Open, at)) => {
                let v = self.expr()?;
                match self.next() {
                    Some((Tok::Close, _)) => Ok(v),
                    Some((t, at)) => Err(CalcError::Unexpected {
                        found: t.text(),
                        at,
                    }),
                    None => Err(CalcError::Unclosed(at)),
                }
            }
            Some((Tok::Close, at)) => Err(CalcError::Unopened(at)),
            Some((t, at)) => Err(CalcError::Unexpected {
                found: t.text(),
                at,
            }),
            None => Err(CalcError::UnexpectedEnd),
        }
    }
}

fn checked(x: f64) -> Result<f64, CalcError> {
    if x.is_nan() {
        Err(CalcError::NotReal)
    } else if x.is_infinite() {
        Err(CalcError::Overflow)
    } else {
        Ok(x)
    }
}

/// Evaluates an arithmetic expression over `f64`: `+ - * / % ^`, unary minus,
/// parentheses and decimals. Nothing else is reachable from an expression.
pub fn evaluate(expr: &str) -> Result<f64, CalcError> {
    let len = expr.chars().count();
    if len > MAX_EXPRESSION_CHARS {
        return Err(CalcError::TooLong(len));
    }
    let tokens = tokenize(expr)?;
    if tokens.is_empty() {
        return Err(CalcError::Empty);
    }
    let mut p = Parser { tokens, pos: 0 };
    let v = p.expr()?;
    match p.next() {
        None => Ok(if v == 0.0 { 0.0 } else { v }),
        Some((Tok::Close, at)) => Err(CalcError::Unopened(at)),
        Some((t, at)) => Err(CalcError::Unexpected {
            found: t.text(),
            at,
        }),
    }
}

/// A result as a person writes it: `84`, `0.3` (not `0.30000000000000004`), `1.5e-9`.
/// Twelve significant digits, trailing zeros dropped.
pub fn format_number(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let abs = x.abs();
    if (1e-6..1e15).contains(&abs) {
        let magnitude = abs.log10().floor() as i32;
        let decimals = (11 - magnitude).clamp(0, 17) as usize;
        trim_zeros(&format!("{x:.decimals$}"))
    } else {
        let s = format!("{x:.11e}");
        match s.split_once('e') {
            Some((mantissa, exp)) => format!("{}e{exp}", trim_zeros(mantissa)),
            None => s,
        }
    }
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

#[derive(Deserialize)]
struct CalcInput {
    expression: String,
}

/// The `calculator` tool.
#[derive(Clone, Copy, Debug, Default)]
pub struct CalculatorTool;

#[async_trait]
impl Tool for CalculatorTool {
    fn meta(&self) -> ToolMeta {
        ToolMeta::pure()
    }
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: CALCULATOR.into(),
            description: "Evaluates an arithmetic expression exactly as written: numbers, \
                + - * / % (remainder) ^ (power), unary minus and parentheses. Use it for \
                every sum, product or percentage (write 15% of 80 as 80 * 15 / 100)."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "expression": {
                        "type": "string",
                        "maxLength": MAX_EXPRESSION_CHARS,
                        "description": "e.g. \"12 * (3 + 4)\" or \"1250 * 1.2\""
                    }
                },
                "required": ["expression"],
                "additionalProperties": false
            }),
        }
    }

    async fn call(&self, input: Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        let input: CalcInput = serde_json::from_value(input).map_err(|e| {
            ToolError(format!(
                "{CALCULATOR} takes {{\"expression\": \"<arithmetic>\"}}: {e}"
            ))
        })?;
        let expr = input.expression.trim();
        let value =
            evaluate(expr).map_err(|e| ToolError(format!("cannot evaluate {expr:?}: {e}")))?;
        Ok(format!("{expr} = {}", format_number(value)))
    }
}

// ---------------------------------------------------------------------------------
// check_invoice

#[derive(Deserialize)]
struct InvoiceInput {
    lines: Vec<InvoiceLine>,
    vat_percent: f64,
    stated_total: f64,
}

#[derive(Deserialize)]
struct InvoiceLine {
    #[serde(default)]
    description: String,
    quantity: f64,
    unit_price: f64,
}

/// `x` as an integer count of `10^-scale` units, refusing values with more digits
/// after the point than `scale`, so no silent rounding happens on the way in.
fn to_fixed(x: f64, scale: i32, what: &str) -> Result<i128, ToolError> {
    if !x.is_finite() || x.abs() > MAX_AMOUNT {
        return Err(ToolError(format!(
            "{what} must be a finite number no larger than 1e12 (got {x})"
        )));
    }
    let scaled = x * 10f64.powi(scale);
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-6 {
        return Err(ToolError(format!(
            "{what} {} has more than {scale} digits after the point",
            format_number(x)
        )));
    }
    Ok(rounded as i128)
}

/// `n / d` rounded half away from zero; `d` is positive.
fn div_round(n: i128, d: i128) -> i128 {
    let (q, r) = (n / d, n % d);
    if 2 * r.abs() >= d { q + n.signum() } else { q }
}

/// `-12.05` from `-1205` hundredths.
fn hundredths(n: i128) -> String {
    let sign = if n < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", n.abs() / 100, n.abs() % 100)
}

/// Checks that `stated_total` equals the lines' sum plus VAT, in integer cents: each
/// line is rounded to the cent, VAT is charged on the subtotal and rounded to the cent.
fn check_invoice(input: &InvoiceInput) -> Result<String, ToolError> {
    if input.lines.is_empty() {
        return Err(ToolError("the invoice has no lines".into()));
    }
    if input.lines.len() > MAX_INVOICE_LINES {
        return Err(ToolError(format!(
            "the invoice has {} lines; this tool checks at most {MAX_INVOICE_LINES}",
            input.lines.len()
        )));
    }
    if !(0.0..=100.0).contains(&input.vat_percent) {
        return Err(ToolError(format!(
            "vat_percent must be between 0 and 100 (got {})",
            input.vat_percent
        )));
    }
    let vat_hundredths = to_fixed(input.vat_percent, 2, "vat_percent")?;
    let stated = to_fixed(input.stated_total, 2, "stated_total")?;
    let mut subtotal: i128 = 0;
    let mut shown = Vec::new();
    for (i, line) in input.lines.iter().enumerate() {
        let n = i + 1;
        if line.quantity < 0.0 {
            return Err(ToolError(format!(
                "line {n}: quantity must not be negative (use a negative unit_price for a discount)"
            )));
        }
        let qty_milli = to_fixed(line.quantity, 3, &format!("line {n}: quantity"))?;
        let price_cents = to_fixed(line.unit_price, 2, &format!("line {n}: unit_price"))?;
        let cents = div_round(qty_milli * price_cents, 1000);
        subtotal += cents;
        let desc = line.description.trim();
        let desc: String = if desc.is_empty() {
            format!("line {n}")
        } else {
            desc.chars().take(60).collect()
        };
        shown.push(format!(
            "{desc}: {} × {} = {}",
            format_number(line.quantity),
            hundredths(price_cents),
            hundredths(cents)
        ));
    }
    let vat = div_round(subtotal * vat_hundredths, 10_000);
    let total = subtotal + vat;
    let breakdown = format!(
        "subtotal {} + VAT {}% {} = total {}",
        hundredths(subtotal),
        format_number(input.vat_percent),
        hundredths(vat),
        hundredths(total)
    );
    let verdict = if stated == total {
        format!("Stated total {} matches: {breakdown}.", hundredths(stated))
    } else {
        let diff = stated - total;
        format!(
            "Stated total {} does NOT match: {breakdown}; the stated total is {} too {}.",
            hundredths(stated),
            hundredths(diff.abs()),
            if diff > 0 { "high" } else { "low" }
        )
    };
    Ok(format!(
        "{verdict} Lines: {}. (Exact to the cent: each line rounded to the cent, VAT on the subtotal.)",
        shown.join("; ")
    ))
}

/// The `check_invoice` tool.
#[derive(Clone, Copy, Debug, Default)]
pub struct InvoiceTool;

#[async_trait]
impl Tool for InvoiceTool {
    fn meta(&self) -> ToolMeta {
        ToolMeta::pure()
    }
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: CHECK_INVOICE.into(),
            description: "Checks an invoice's stated total against its lines and VAT, exact \
                to the cent, and reports the computed subtotal, VAT and total."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "lines": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_INVOICE_LINES,
                        "items": {
                            "type": "object",
                            "properties": {
                                "description": {"type": "string"},
                                "quantity": {"type": "number", "minimum": 0},
                                "unit_price": {"type": "number", "description": "Price per unit, at most 2 decimals; negative for a discount."}
                            },
                            "required": ["description", "quantity", "unit_price"]
                        }
                    },
                    "vat_percent": {"type": "number", "minimum": 0, "maximum": 100},
                    "stated_total": {"type": "number", "description": "The total the invoice claims, VAT included."}
                },
                "required": ["lines", "vat_percent", "stated_total"],
                "additionalProperties": false
            }),
        }
    }

    async fn call(&self, input: Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        let input: InvoiceInput = serde_json::from_value(input).map_err(|e| {
            ToolError(format!(
                "{CHECK_INVOICE} takes {{\"lines\": [{{\"description\", \"quantity\", \"unit_price\"}}], \
                 \"vat_percent\", \"stated_total\"}}: {e}"
            ))
        })?;
        check_invoice(&input)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn eval(s: &str) -> f64 {
        evaluate(s).unwrap()
    }

    #[test]
    fn respects_precedence_and_associativity() {
        assert_eq!(eval("12 * (3 + 4)"), 84.0);
        assert_eq!(eval("2 + 3 * 4"), 14.0);
        assert_eq!(eval("(2 + 3) * 4"), 20.0);
        assert_eq!(eval("10 - 4 - 3"), 3.0);
        assert_eq!(eval("100 / 10 / 5"), 2.0);
        assert_eq!(eval("2 ^ 3 ^ 2"), 512.0);
        assert_eq!(eval("-2 ^ 2"), -4.0);
        assert_eq!(eval("2 ^ -1"), 0.5);
        assert_eq!(eval("(-2) ^ 2"), 4.0);
        assert_eq!(eval("17 % 5 * 2"), 4.0);
        assert_eq!(eval("--3 + +2"), 5.0);
        assert_eq!(eval("1250 * 1.2"), 1500.0);
        assert_eq!(eval(".5 + 1."), 1.5);
        assert_eq!(eval("6 × 7 ÷ 2"), 21.0);
        assert_eq!(eval("-0"), 0.0);
    }

    #[test]
    fn explains_what_is_wrong() {
        assert_eq!(evaluate("1 / 0"), Err(CalcError::DivisionByZero));
        assert_eq!(evaluate("1 / (2 - 2)"), Err(CalcError::DivisionByZero));
        assert_eq!(evaluate("5 % 0"), Err(CalcError::RemainderByZero));
        assert_eq!(evaluate(""), Err(CalcError::Empty));
        assert_eq!(evaluate("   "), Err(CalcError::Empty));
        assert_eq!(evaluate("(1 + 2"), Err(CalcError::Unclosed(1)));
        assert_eq!(evaluate("1 + 2)"), Err(CalcError::Unopened(6)));
        assert_eq!(evaluate(")"), Err(CalcError::Unopened(1)));
        assert_eq!(evaluate("2 *"), Err(CalcError::UnexpectedEnd));
        assert_eq!(
            evaluate("2 * * 3"),
            Err(CalcError::Unexpected {
                found: "*".into(),
                at: 5
            })
        );
        assert_eq!(
            evaluate("2 3"),
            Err(CalcError::Unexpected {
                found: "3".into(),
                at: 3
            })
        );
        assert_eq!(
            evaluate("1.2.3"),
            Err(CalcError::BadNumber {
                text: "1.2.3".into(),
                at: 1
            })
        );
        assert!(matches!(
            evaluate("x + 1"),
            Err(CalcError::BadChar { ch: 'x', at: 1, .. })
        ));
        let err = evaluate("1,250 + 1").unwrap_err().to_string();
        assert!(err.contains("thousands separators"), "{err}");
        let long = "1+".repeat(128) + "1";
        assert_eq!(evaluate(&long), Err(CalcError::TooLong(257)));
        assert_eq!(evaluate("10 ^ 400"), Err(CalcError::Overflow));
        assert_eq!(evaluate("(-8) ^ 0.5"), Err(CalcError::NotReal));
        // Deep nesting within the length limit stays on the stack.
        let deep = "(".repeat(120) + "1" + &")".repeat(120);
        assert_eq!(eval(&deep), 1.0);
        let negs = "-".repeat(255) + "1";
        assert_eq!(eval(&negs), -1.0);
    }

    #[test]
    fn formats_without_noise() {
        assert_eq!(format_number(84.0), "84");
        assert_eq!(format_number(0.1 + 0.2), "0.3");
        assert_eq!(format_number(1.0 / 3.0), "0.333333333333");
        assert_eq!(format_number(-2.5), "-2.5");
        assert_eq!(format_number(1e20), "1e20");
        assert_eq!(format_number(1.5e-9), "1.5e-9");
        assert_eq!(format_number(123456789012.0), "123456789012");
        assert_eq!(format_number(-0.0), "0");
    }

    #[tokio::test]
    async fn calculator_tool_echoes_the_expression() {
        let ctx = ctx();
        let out = CalculatorTool
            .call(json!({"expression": " 12 * (3 + 4) "}), &ctx)
            .await
            .unwrap();
        assert_eq!(out, "12 * (3 + 4) = 84");
        let err = CalculatorTool
            .call(json!({"expression": "1/0"}), &ctx)
            .await
            .unwrap_err();
        assert_eq!(err.0, "cannot evaluate \"1/0\": division by zero");
        assert!(
            CalculatorTool
                .call(json!({"expr": "1"}), &ctx)
                .await
                .is_err()
        );
    }

    #[test]
    fn converts_at_the_bundled_rates_and_says_so() {
        assert_eq!(
            convert(1250.0, "EUR", "USD").unwrap(),
            "1250.00 EUR = 1356.25 USD at 1 EUR = 1.0850 USD (bundled reference-rate sample, not live)"
        );
        assert_eq!(
            convert(100.0, "usd", "eur").unwrap(),
            "100.00 USD = 92.17 EUR at 1 USD = 0.92166 EUR (bundled reference-rate sample, not live)"
        );
        assert_eq!(
            convert(1000.0, "JPY", "EUR").unwrap(),
            "1000 JPY = 6.15 EUR at 1 JPY = 0.0061538 EUR (bundled reference-rate sample, not live)"
        );
        assert_eq!(
            convert(10.0, "EUR", "JPY").unwrap(),
            "10.00 EUR = 1625 JPY at 1 EUR = 162.5000 JPY (bundled reference-rate sample, not live)"
        );
        assert!(
            convert(0.0, "GBP", "GBP")
                .unwrap()
                .starts_with("0.00 GBP = 0.00 GBP at 1 GBP = 1.0000 GBP")
        );
    }

    #[test]
    fn rejects_bad_codes_and_amounts() {
        let e = convert(1.0, "EURO", "USD").unwrap_err().0;
        assert!(e.contains("\"EURO\" is not a currency code"), "{e}");
        let e = convert(1.0, "EUR", "XAU").unwrap_err().0;
        assert!(
            e.contains("no reference rate for XAU") && e.contains("USD, GBP"),
            "{e}"
        );
        assert!(
            convert(-5.0, "EUR", "USD")
                .unwrap_err()
                .0
                .contains("negative")
        );
        assert!(
            convert(f64::NAN, "EUR", "USD")
                .unwrap_err()
                .0
                .contains("finite")
        );
        assert!(convert(f64::INFINITY, "EUR", "USD").is_err());
        assert!(convert(1e13, "EUR", "USD").is_err());
    }

    #[tokio::test]
    async fn currency_tool_reads_its_input() {
        let ctx = ctx();
        let out = CurrencyTool
            .call(json!({"amount": "1,250", "from": "eur", "to": "usd"}), &ctx)
            .await
            .unwrap();
        assert!(out.starts_with("1250.00 EUR = 1356.25 USD"), "{out}");
        let err = CurrencyTool
            .call(json!({"amount": true, "from": "EUR", "to": "USD"}), &ctx)
            .await
            .unwrap_err();
        assert_eq!(err.0, "the amount true is not a number");
        assert!(CurrencyTool.call(json!({"amount": 1}), &ctx).await.is_err());
    }

    #[test]
    fn every_rate_is_sane() {
        let codes: Vec<&str> = currency_codes().collect();
        assert!(codes.len() >= 15);
        for (i, r) in RATES.iter().enumerate() {
            assert!(r.per_eur.is_finite() && r.per_eur > 0.0, "{}", r.code);
            assert!(!codes[..i].contains(&r.code), "duplicate {}", r.code);
        }
    }

    fn invoice(lines: Value, vat: f64, stated: f64) -> Result<String, ToolError> {
        let input: InvoiceInput = serde_json::from_value(
            json!({"lines": lines, "vat_percent": vat, "stated_total": stated}),
        )
        .unwrap();
        check_invoice(&input)
    }

    #[test]
    fn checks_invoices_to_the_cent() {
        let lines = json!([
            {"description": "Consulting", "quantity": 7.5, "unit_price": 120.0},
            {"description": "Licence", "quantity": 3, "unit_price": 19.99},
            {"description": "Discount", "quantity": 1, "unit_price": -50.0}
        ]);
        // 900.00 + 59.97 - 50.00 = 909.97; VAT 20% = 181.994 -> 181.99; total 1091.96.
        let ok = invoice(lines.clone(), 20.0, 1091.96).unwrap();
        assert!(
            ok.starts_with(
                "Stated total 1091.96 matches: subtotal 909.97 + VAT 20% 181.99 = total 1091.96."
            ),
            "{ok}"
        );
        assert!(ok.contains("Licence: 3 × 19.99 = 59.97"), "{ok}");
        let off = invoice(lines, 20.0, 1092.0).unwrap();
        assert!(
            off.starts_with("Stated total 1092.00 does NOT match: ")
                && off.contains("the stated total is 0.04 too high"),
            "{off}"
        );
        // 0.1 + 0.2 style inputs stay exact.
        let tiny = json!([{"description": "a", "quantity": 1, "unit_price": 0.1},
                          {"description": "b", "quantity": 1, "unit_price": 0.2}]);
        assert!(invoice(tiny, 0.0, 0.3).unwrap().contains("matches"));
        // Half a cent of VAT rounds up: 0.05 * 10% = 0.005 -> 0.01.
        let half = json!([{"description": "x", "quantity": 1, "unit_price": 0.05}]);
        assert!(invoice(half, 10.0, 0.06).unwrap().contains("matches"));
    }

    #[test]
    fn rejects_unusable_invoices() {
        let line = |q: f64, p: f64| json!([{"description": "x", "quantity": q, "unit_price": p}]);
        assert!(
            invoice(json!([]), 20.0, 0.0)
                .unwrap_err()
                .0
                .contains("no lines")
        );
        assert!(
            invoice(line(1.0, 0.125), 20.0, 0.0)
                .unwrap_err()
                .0
                .contains("more than 2 digits")
        );
        assert!(
            invoice(line(-1.0, 1.0), 20.0, 0.0)
                .unwrap_err()
                .0
                .contains("negative")
        );
        assert!(
            invoice(line(1.0, 1.0), 120.0, 0.0)
                .unwrap_err()
                .0
                .contains("between 0 and 100")
        );
        assert!(
            invoice(line(1.0, 1.0), 20.0, 1.001)
                .unwrap_err()
                .0
                .contains("stated_total")
        );
    }

    fn ctx() -> ToolContext {
        ToolContext {
            agent: aos_kernel::AgentName::new("finance").unwrap(),
            session: aos_kernel::SessionId::new("s-1").unwrap(),
            task: aos_kernel::TaskId::new(0),
            now_ms: 0,
        }
    }
}
