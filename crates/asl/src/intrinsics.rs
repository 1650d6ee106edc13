//! Intrinsic functions of the Amazon States Language (`"key.$": "States.Format('{}/x', $.a)"`): parsed once when the
//! definition is read, evaluated per state entry. Supported: `States.Format`, `States.StringToJson`,
//! `States.JsonToString`, `States.Array`, `States.ArrayLength`, `States.ArrayGetItem`, `States.JsonMerge` (shallow),
//! `States.MathAdd`, `States.UUID`. Any other function is refused at parse time.

use serde_json::Value;

use super::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Literal(Value),
    Path(Path),
    Call(Call),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    pub args: Vec<Arg>,
}

const FUNCTIONS: &[&str] = &[
    "States.Format",
    "States.StringToJson",
    "States.JsonToString",
    "States.Array",
    "States.ArrayLength",
    "States.ArrayGetItem",
    "States.ArrayContains",
    "States.JsonMerge",
    "States.MathAdd",
    "States.UUID",
];

pub fn is_call(s: &str) -> bool {
    s.starts_with("States.")
}

/// Parses `States.Name(arg, …)`.
pub fn parse(text: &str) -> Result<Call, String> {
    let mut p = Parser { s: text, i: 0 };
    let call = p.call()?;
    p.ws();
    if p.i != text.len() {
        return Err(format!("{text:?}: unexpected text after the call"));
    }
    Ok(call)
}

struct Parser<'a> {
    s: &'a str,
    i: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.s[self.i..]
    }

    fn ws(&mut self) {
        while self.rest().starts_with(' ') {
            self.i += 1;
        }
    }

    fn call(&mut self) -> Result<Call, String> {
        let open = self
            .rest()
            .find('(')
            .ok_or_else(|| format!("{:?}: expected States.Name(…)", self.s))?;
        let name = self.rest()[..open].trim().to_string();
        if !FUNCTIONS.contains(&name.as_str()) {
            return Err(format!("intrinsic function {name:?} is not supported"));
        }
        self.i += open + 1;
        let mut args = Vec::new();
        loop {
            self.ws();
            if let Some(r) = self.rest().strip_prefix(')') {
                let _ = r;
                self.i += 1;
                break;
            }
            if !args.is_empty() {
                if !self.rest().starts_with(',') {
                    return Err(format!("{:?}: expected , or ) at {}", self.s, self.i));
                }
                self.i += 1;
                self.ws();
            }
            args.push(self.arg()?);
        }
        Ok(Call { name, args })
    }

    fn arg(&mut self) -> Result<Arg, String> {
        let r = self.rest().to_string();
        if let Some(quoted) = r.strip_prefix('\'') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            while let Some((k, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, e)) => out.push(e),
                        None => break,
                    },
                    '\'' => {
                        self.i += k + 2;
                        return Ok(Arg::Literal(Value::String(out)));
                    }
                    c => out.push(c),
                }
            }
            return Err(format!("{:?}: unterminated string", self.s));
        }
        let end = self.token_end();
        let tok = &r[..end];
        if tok.starts_with('$') {
            self.i += end;
            return Ok(Arg::Path(Path::parse(tok)?));
        }
        if tok.starts_with("States.") {
            return Ok(Arg::Call(self.call()?));
        }
        let v = serde_json::from_str::<Value>(tok).map_err(|_| format!("{:?}: bad argument {tok:?}", self.s))?;
        self.i += end;
        Ok(Arg::Literal(v))
    }

    /// The end of a bare token (a path, number or keyword): the next `,` or `)` outside brackets and quotes.
    fn token_end(&self) -> usize {
        let mut depth = 0;
        let mut quote = None;
        for (k, c) in self.rest().char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '[') => depth += 1,
                (None, ']') => depth -= 1,
                (None, ',' | ')') if depth == 0 => return k,
                (None, '(') => return self.rest().len(),
                _ => {}
            }
        }
        self.rest().len()
    }
}

/// Evaluates a call against the state's data and the context object.
pub fn eval(call: &Call, data: &Value, context: &Value) -> Result<Value, String> {
    let mut args = Vec::with_capacity(call.args.len());
    for a in &call.args {
        args.push(match a {
            Arg::Literal(v) => v.clone(),
            Arg::Path(p) => p
                .get(data, context)
                .cloned()
                .ok_or_else(|| format!("{}: {} matches nothing", call.name, p.text))?,
            Arg::Call(c) => eval(c, data, context)?,
        });
    }
    apply(&call.name, args)
}

/// One intrinsic function applied to its evaluated arguments.
fn apply(n: &str, args: Vec<Value>) -> Result<Value, String> {
    let want = |k: usize| {
        if args.len() == k {
            Ok(())
        } else {
            Err(format!("{n} takes {k} argument(s), got {}", args.len()))
        }
    };
    match n {
        "States.Format" => format(n, &args),
        "States.StringToJson" => {
            want(1)?;
            let Value::String(s) = &args[0] else {
                return Err(format!("{n}: the argument must be a string"));
            };
            serde_json::from_str(s).map_err(|e| format!("{n}: {e}"))
        }
        "States.JsonToString" => {
            want(1)?;
            Ok(Value::String(args[0].to_string()))
        }
        "States.Array" => Ok(Value::Array(args)),
        "States.ArrayLength" => {
            want(1)?;
            match &args[0] {
                Value::Array(a) => Ok(Value::from(a.len())),
                _ => Err(format!("{n}: the argument must be an array")),
            }
        }
        "States.ArrayGetItem" => {
            want(2)?;
            match (&args[0], args[1].as_u64()) {
                (Value::Array(a), Some(i)) => a
                    .get(i as usize)
                    .cloned()
                    .ok_or_else(|| format!("{n}: index {i} out of bounds")),
                _ => Err(format!("{n}: takes an array and an index")),
            }
        }
        "States.ArrayContains" => {
            want(2)?;
            match &args[0] {
                Value::Array(a) => Ok(Value::Bool(a.contains(&args[1]))),
                _ => Err(format!("{n}: the first argument must be an array")),
            }
        }
        "States.JsonMerge" => {
            want(3)?;
            json_merge(n, &args)
        }
        "States.MathAdd" => {
            want(2)?;
            match (args[0].as_i64(), args[1].as_i64()) {
                (Some(a), Some(b)) => Ok(Value::from(a + b)),
                _ => Err(format!("{n}: both arguments must be integers")),
            }
        }
        "States.UUID" => {
            want(0)?;
            Ok(Value::String(uuid::Uuid::new_v4().to_string()))
        }
        other => Err(format!("intrinsic function {other:?} is not supported")),
    }
}

/// `States.Format`: each `{}` of the first argument replaced by the next argument (strings as they are, other
/// scalars as JSON).
fn format(n: &str, args: &[Value]) -> Result<Value, String> {
    let Some(Value::String(fmt)) = args.first() else {
        return Err(format!("{n}: the first argument must be a string"));
    };
    let mut out = String::new();
    let mut rest = args[1..].iter();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '{' && chars.peek() == Some(&'}') {
            chars.next();
            let v = rest.next().ok_or_else(|| format!("{n}: more {{}} than arguments"))?;
            match v {
                Value::String(s) => out.push_str(s),
                Value::Object(_) | Value::Array(_) => {
                    return Err(format!("{n}: arguments must be strings, numbers, booleans or null"))
                }
                other => out.push_str(&other.to_string()),
            }
        } else {
            out.push(c);
        }
    }
    if rest.next().is_some() {
        return Err(format!("{n}: more arguments than {{}}"));
    }
    Ok(Value::String(out))
}

/// `States.JsonMerge`, shallow only: the second object's keys over the first's.
fn json_merge(n: &str, args: &[Value]) -> Result<Value, String> {
    if args[2] != Value::Bool(false) {
        return Err(format!("{n}: only the shallow merge (false) is supported"));
    }
    match (&args[0], &args[1]) {
        (Value::Object(a), Value::Object(b)) => {
            let mut m = a.clone();
            m.extend(b.clone());
            Ok(Value::Object(m))
        }
        _ => Err(format!("{n}: both arguments must be objects")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(expr: &str, data: &Value) -> Result<Value, String> {
        eval(&parse(expr)?, data, &json!({"Execution": {"Name": "exec-1"}}))
    }

    #[test]
    fn the_supported_functions_follow_the_specification() {
        let d = json!({"a": "x", "n": 3, "o": {"k": 1}, "p": {"k": 2, "z": true}, "arr": [1, 2], "s": "{\"q\": [1]}"});
        assert_eq!(
            run("States.Format('run/{}/{}-{}', $.a, $.n, $$.Execution.Name)", &d),
            Ok(json!("run/x/3-exec-1"))
        );
        assert_eq!(run(r"States.Format('it\'s {}', $.a)", &d), Ok(json!("it's x")));
        assert_eq!(run("States.StringToJson($.s)", &d), Ok(json!({"q": [1]})));
        assert_eq!(run("States.JsonToString($.o)", &d), Ok(json!("{\"k\":1}")));
        assert_eq!(
            run("States.Array($.a, 1, true, null)", &d),
            Ok(json!(["x", 1, true, null]))
        );
        assert_eq!(run("States.ArrayLength($.arr)", &d), Ok(json!(2)));
        assert_eq!(run("States.ArrayGetItem($.arr, 1)", &d), Ok(json!(2)));
        assert_eq!(run("States.ArrayContains($.arr, 2)", &d), Ok(json!(true)));
        assert_eq!(run("States.ArrayContains($.arr, $.a)", &d), Ok(json!(false)));
        assert!(run("States.ArrayContains($.a, 1)", &d).is_err());
        assert_eq!(
            run("States.JsonMerge($.o, $.p, false)", &d),
            Ok(json!({"k": 2, "z": true}))
        );
        assert_eq!(run("States.MathAdd($.n, -1)", &d), Ok(json!(2)));
        assert_eq!(
            run("States.Format('{}', States.ArrayLength($.arr))", &d),
            Ok(json!("2"))
        );
        assert!(run("States.UUID()", &d).is_ok());
    }

    #[test]
    fn bad_calls_are_errors() {
        let d = json!({"o": {}});
        assert!(parse("States.Hash($.o, 'MD5')").is_err(), "unsupported function");
        assert!(parse("States.Format('x'").is_err());
        assert!(run("States.Format('{} {}', 'one')", &d).is_err());
        assert!(run("States.Format('{}', $.missing)", &d).is_err());
        assert!(run("States.Format('{}', $.o)", &d).is_err());
        assert!(run("States.JsonMerge($.o, $.o, true)", &d).is_err());
    }
}
