//! Choice rules: And, Or, Not and the comparisons of the specification, parsed once into an enum.

use serde_json::Value;

use crate::error::{AslError, Failure};
use crate::parse::invalid;
use crate::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    Value(Value),
    Path(Path),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rule {
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Not(Box<Rule>),
    Test {
        var: Path,
        op: Comparison,
        operand: Operand,
    },
}

/// How two values are ordered by a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    Equals,
    LessThan,
    GreaterThan,
    LessThanEquals,
    GreaterThanEquals,
}

impl Order {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Equals" => Order::Equals,
            "LessThan" => Order::LessThan,
            "GreaterThan" => Order::GreaterThan,
            "LessThanEquals" => Order::LessThanEquals,
            "GreaterThanEquals" => Order::GreaterThanEquals,
            _ => return None,
        })
    }

    fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Order::Equals => ord == Equal,
            Order::LessThan => ord == Less,
            Order::GreaterThan => ord == Greater,
            Order::LessThanEquals => ord != Greater,
            Order::GreaterThanEquals => ord != Less,
        }
    }
}

/// The comparisons of a choice rule, by the field that names them (`StringLessThan`, `IsPresent`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comparison {
    String(Order),
    StringMatches,
    Numeric(Order),
    BooleanEquals,
    IsNull,
    IsPresent,
    IsString,
    IsNumeric,
    IsBoolean,
}

impl Comparison {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "StringMatches" => Comparison::StringMatches,
            "BooleanEquals" => Comparison::BooleanEquals,
            "IsNull" => Comparison::IsNull,
            "IsPresent" => Comparison::IsPresent,
            "IsString" => Comparison::IsString,
            "IsNumeric" => Comparison::IsNumeric,
            "IsBoolean" => Comparison::IsBoolean,
            n => match (n.strip_prefix("String"), n.strip_prefix("Numeric")) {
                (Some(o), _) => Comparison::String(Order::parse(o)?),
                (_, Some(o)) => Comparison::Numeric(Order::parse(o)?),
                _ => return None,
            },
        })
    }

    /// A type test (`Is…`): its operand is a literal boolean, never a path.
    fn is_test(self) -> bool {
        matches!(
            self,
            Comparison::IsNull
                | Comparison::IsPresent
                | Comparison::IsString
                | Comparison::IsNumeric
                | Comparison::IsBoolean
        )
    }
}

impl Rule {
    pub(crate) fn parse(v: &Value, state: &str, top: bool) -> Result<Rule, AslError> {
        let bad = invalid(state);
        let m = v
            .as_object()
            .ok_or_else(|| bad("a choice rule must be an object".into()))?;
        let nested = |k: &str| -> Result<Vec<Rule>, AslError> {
            m[k].as_array()
                .ok_or_else(|| bad(format!("{k} takes an array of rules")))?
                .iter()
                .map(|r| Rule::parse(r, state, false))
                .collect()
        };
        let allowed_meta = |k: &str| k == "Comment" || (top && k == "Next");
        if m.contains_key("And") {
            return Ok(Rule::And(nested("And")?));
        }
        if m.contains_key("Or") {
            return Ok(Rule::Or(nested("Or")?));
        }
        if let Some(n) = m.get("Not") {
            return Ok(Rule::Not(Box::new(Rule::parse(n, state, false)?)));
        }
        let var = m
            .get("Variable")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a choice rule needs Variable (or And, Or, Not)".into()))?;
        let var = Path::parse(var).map_err(bad)?;
        let mut test = None;
        for (k, v) in m {
            if k == "Variable" || allowed_meta(k) {
                continue;
            }
            let (op, is_path) = match (k.strip_suffix("Path").and_then(Comparison::parse), Comparison::parse(k)) {
                (Some(op), _) if !op.is_test() => (op, true),
                (_, Some(op)) => (op, false),
                _ => {
                    return Err(AslError::Unsupported {
                        state: state.into(),
                        what: format!("choice comparison {k:?}"),
                    })
                }
            };
            if test.is_some() {
                return Err(bad("a choice rule has exactly one comparison".into()));
            }
            let operand = if is_path {
                Operand::Path(Path::parse(v.as_str().ok_or_else(|| bad(format!("{k} takes a path")))?).map_err(bad)?)
            } else {
                Operand::Value(v.clone())
            };
            test = Some((op, operand));
        }
        let (op, operand) = test.ok_or_else(|| bad("a choice rule needs a comparison".into()))?;
        Ok(Rule::Test {
            var: var.clone(),
            op,
            operand,
        })
    }

    pub(crate) fn eval(&self, data: &Value, context: &Value, state: &str) -> Result<bool, Failure> {
        match self {
            Rule::And(rs) => {
                for r in rs {
                    if !r.eval(data, context, state)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Rule::Or(rs) => {
                for r in rs {
                    if r.eval(data, context, state)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Rule::Not(r) => Ok(!r.eval(data, context, state)?),
            Rule::Test { var, op, operand } => {
                let found = var.get(data, context);
                if *op == Comparison::IsPresent {
                    return Ok(found.is_some() == (operand == &Operand::Value(Value::Bool(true))));
                }
                let Some(v) = found else {
                    return Err(Failure::runtime(
                        state,
                        format!("choice variable {} matches nothing", var.text),
                    ));
                };
                let b = match operand {
                    Operand::Value(b) => b.clone(),
                    Operand::Path(p) => p
                        .get(data, context)
                        .cloned()
                        .ok_or_else(|| Failure::runtime(state, format!("choice operand {} matches nothing", p.text)))?,
                };
                let want = b == Value::Bool(true);
                Ok(match op {
                    Comparison::IsNull => v.is_null() == want,
                    Comparison::IsString => v.is_string() == want,
                    Comparison::IsNumeric => v.is_number() == want,
                    Comparison::IsBoolean => v.is_boolean() == want,
                    // Answered above, before the variable must match something.
                    Comparison::IsPresent => found.is_some() == want,
                    Comparison::BooleanEquals => v.as_bool().is_some() && v.as_bool() == b.as_bool(),
                    Comparison::StringMatches => match (v.as_str(), b.as_str()) {
                        (Some(s), Some(p)) => string_matches(p, s),
                        _ => false,
                    },
                    Comparison::String(o) => match (v.as_str(), b.as_str()) {
                        (Some(x), Some(y)) => o.holds(x.cmp(y)),
                        _ => false,
                    },
                    Comparison::Numeric(o) => match (v.as_f64(), b.as_f64()) {
                        (Some(x), Some(y)) => x.partial_cmp(&y).is_some_and(|ord| o.holds(ord)),
                        _ => false,
                    },
                })
            }
        }
    }
}

/// `StringMatches`: `*` matches any run of characters; `\*` and `\\` are literal.
pub(crate) fn string_matches(pattern: &str, s: &str) -> bool {
    #[derive(PartialEq)]
    enum T {
        Star,
        Char(char),
    }
    let mut toks = Vec::new();
    let mut it = pattern.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => toks.push(T::Char(it.next().unwrap_or('\\'))),
            '*' => toks.push(T::Star),
            c => toks.push(T::Char(c)),
        }
    }
    pub(crate) fn go(p: &[T], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(T::Star) => go(&p[1..], s) || (!s.is_empty() && go(p, &s[1..])),
            Some(T::Char(c)) => s.first() == Some(c) && go(&p[1..], &s[1..]),
        }
    }
    go(&toks, &s.chars().collect::<Vec<_>>())
}
