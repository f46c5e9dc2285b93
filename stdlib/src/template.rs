//! The `template` namespace: minijinja templates with strict undefined. An undefined variable
//! is an error naming the template and the line; a template that renders a Secret returns a
//! Secret, so values files and policies with passwords never reach output unmasked.

use std::fmt;
use std::sync::Arc;

use minijinja::value::{Object, ObjectRepr};
use minijinja::{Environment, ErrorKind as JErr, UndefinedBehavior, Value as JValue};
use rhai::plugin::*;
use rhai::{Array, Map};

use crate::error::{HostError, RhaiResult};
use crate::host::Host;
use crate::secret_value::Secret;

/// A Secret inside a template context: renders its value.
#[derive(Debug)]
struct SecretValue(Secret);

impl Object for SecretValue {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }
    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.expose())
    }
}

fn to_jinja(d: &Dynamic, secrets: &mut Vec<Secret>) -> JValue {
    if let Some(s) = d.read_lock::<Secret>() {
        secrets.push(s.clone());
        return JValue::from_object(SecretValue(s.clone()));
    }
    if d.is_unit() {
        return JValue::from(());
    }
    if let Ok(b) = d.as_bool() {
        return JValue::from(b);
    }
    if let Ok(i) = d.as_int() {
        return JValue::from(i);
    }
    if let Ok(f) = d.as_float() {
        return JValue::from(f);
    }
    if let Some(a) = d.read_lock::<Array>() {
        return JValue::from(a.iter().map(|x| to_jinja(x, secrets)).collect::<Vec<_>>());
    }
    if let Some(m) = d.read_lock::<Map>() {
        return JValue::from(
            m.iter()
                .map(|(k, v)| (k.to_string(), to_jinja(v, secrets)))
                .collect::<std::collections::BTreeMap<_, _>>(),
        );
    }
    JValue::from(d.to_string())
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.add_filter("to_yaml", |v: JValue| -> Result<String, minijinja::Error> {
        let json: serde_json::Value = serde_json::to_value(&v)
            .map_err(|e| minijinja::Error::new(JErr::InvalidOperation, e.to_string()))?;
        crate::yaml::to_yaml(&json)
            .map(|s| s.trim_end().to_string())
            .map_err(|e| minijinja::Error::new(JErr::InvalidOperation, e.message))
    });
    env.add_filter("b64encode", |v: String| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(v.as_bytes())
    });
    env
}

/// The result of a render: the text, and whether a Secret went into it.
pub struct Rendered {
    pub text: String,
    pub secret: bool,
}

/// Renders `source` (named `name` in errors) with `vars`.
pub fn render_text(name: &str, source: &str, vars: &Dynamic) -> Result<Rendered, HostError> {
    let mut secrets = Vec::new();
    let ctx = to_jinja(vars, &mut secrets);
    let mut env = environment();
    env.add_template_owned(name.to_string(), source.to_string())
        .map_err(|e| describe(&e, name, source, &ctx).with_source(e))?;
    let tmpl = env
        .get_template(name)
        .map_err(|e| describe(&e, name, source, &ctx).with_source(e))?;
    let text = tmpl
        .render(&ctx)
        .map_err(|e| describe(&e, name, source, &ctx).with_source(e))?;
    let secret = secrets.iter().any(|s| {
        use base64::Engine as _;
        !s.expose().is_empty()
            && (text.contains(s.expose())
                || text.contains(
                    &base64::engine::general_purpose::STANDARD.encode(s.expose().as_bytes()),
                ))
    });
    Ok(Rendered { text, secret })
}

/// Turns a minijinja error into a message with the template's name and line, naming the
/// undefined variable when that is the cause.
fn describe(e: &minijinja::Error, name: &str, source: &str, ctx: &JValue) -> HostError {
    let line = e.line().unwrap_or(0);
    let at = if line > 0 {
        format!("{name}:{line}")
    } else {
        name.to_string()
    };
    let source_line = source
        .lines()
        .nth(line.saturating_sub(1))
        .unwrap_or("")
        .trim();
    match e.kind() {
        JErr::UndefinedError => {
            let missing = undefined_names(name, source, ctx);
            let on_line: Vec<&String> = missing
                .iter()
                .filter(|m| source_line.contains(m.as_str()))
                .collect();
            let names = if on_line.is_empty() {
                missing.iter().collect()
            } else {
                on_line
            };
            let listed = names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let what = if listed.is_empty() {
                "an undefined value".to_string()
            } else {
                format!("undefined variable {listed}")
            };
            HostError::input(format!("template `{at}` uses {what}: `{source_line}`")).with_hint(
                "pass it in the variables map, or give it a default: `{{ x | default('...') }}`",
            )
        }
        JErr::SyntaxError => HostError::input(format!(
            "syntax error in template `{at}`: {}",
            e.detail().unwrap_or("invalid syntax")
        )),
        _ => HostError::input(format!(
            "template `{at}` failed: {}{}",
            e.kind(),
            e.detail().map(|d| format!(": {d}")).unwrap_or_default()
        )),
    }
}

fn undefined_names(name: &str, source: &str, ctx: &JValue) -> Vec<String> {
    let env = environment();
    let Ok(t) = env.template_from_named_str(name, source) else {
        return Vec::new();
    };
    let mut missing: Vec<String> = t
        .undeclared_variables(true)
        .into_iter()
        .filter(|path| {
            let mut v = ctx.clone();
            for part in path.split('.') {
                match v.get_attr(part) {
                    Ok(next) if !next.is_undefined() => v = next,
                    _ => return true,
                }
            }
            false
        })
        .collect();
    missing.sort();
    missing
}

fn into_dynamic(r: Rendered) -> Dynamic {
    if r.secret {
        Dynamic::from(Secret::new(r.text, "rendered template"))
    } else {
        r.text.into()
    }
}

/// The `template` namespace.
#[export_module]
pub mod template_module {
    use super::*;

    /// Renders a template string with `vars`. Undefined variables are errors. The result is a
    /// Secret when a Secret was rendered into it.
    ///
    /// ```rhai
    /// template::render("host: {{ db.host }}", #{db: #{host: "pg.local"}})   // "host: pg.local"
    /// ```
    #[rhai_fn(return_raw)]
    pub fn render(ctx: NativeCallContext, text: &str, vars: Dynamic) -> RhaiResult<Dynamic> {
        crate::host::track(&ctx);
        Ok(into_dynamic(render_text("<inline template>", text, &vars)?))
    }

    /// Renders a template file, relative to the calling script's folder.
    ///
    /// ```rhai
    /// let values = template::render_file("templates/argo-workflows.values.yaml.j2", #{config: config});
    /// ```
    #[rhai_fn(return_raw)]
    pub fn render_file(ctx: NativeCallContext, path: &str, vars: Dynamic) -> RhaiResult<Dynamic> {
        let host = Host::of(&ctx)?;
        let full = host.check_read(&host.resolve_from(&ctx, path))?;
        let source = std::fs::read_to_string(&full).map_err(|e| {
            HostError::io(format!("cannot read template `{}`: {e}", full.display()))
        })?;
        let name = host.display_path(&full);
        Ok(into_dynamic(render_text(&name, &source, &vars)?))
    }

    /// Reads a file relative to the calling script's folder as it is, without rendering (for
    /// files shipped elsewhere verbatim, such as a recipe put into a ConfigMap). The same
    /// sandbox as `render_file`.
    ///
    /// ```rhai
    /// let source = template::read_file("maintenance/refresh-ecr.rhai");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn read_file(ctx: NativeCallContext, path: &str) -> RhaiResult<String> {
        let host = Host::of(&ctx)?;
        let full = host.check_read(&host.resolve_from(&ctx, path))?;
        Ok(std::fs::read_to_string(&full)
            .map_err(|e| HostError::io(format!("cannot read `{}`: {e}", full.display())))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(json: serde_json::Value) -> Dynamic {
        crate::value::from_json(&json)
    }

    #[test]
    fn renders_and_names_undefined_variables() {
        let r = render_text(
            "t.j2",
            "a: {{ a }}\nb: {{ db.host }}\n",
            &vars(serde_json::json!({"a": 1, "db": {}})),
        );
        let e = r.err().expect("must fail");
        assert!(e.message.contains("`t.j2:2`"), "{}", e.message);
        assert!(e.message.contains("db.host"), "{}", e.message);
    }

    #[test]
    fn secret_in_output_marks_result() {
        let mut m = Map::new();
        m.insert(
            "pw".into(),
            Dynamic::from(Secret::new("tmpl-canary-1", "t")),
        );
        let r = render_text("t", "password: {{ pw }}", &m.into()).unwrap();
        assert!(r.secret);
        assert_eq!(r.text, "password: tmpl-canary-1");
    }

    #[test]
    fn argo_placeholders_survive_raw() {
        let r = render_text(
            "t",
            "k: '{% raw %}{{workflow.name}}{% endraw %}'",
            &Map::new().into(),
        )
        .unwrap();
        assert_eq!(r.text, "k: '{{workflow.name}}'");
    }
}

/// Property tests (the fuzzing of issue 8): rendering never panics, whatever the template.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        #[test]
        fn rendering_never_panics(src in "[a-z {}%#()|.'\"=<>!\\-\\n]{0,80}") {
            let mut m = Map::new();
            m.insert("a".into(), (1 as rhai::INT).into());
            m.insert("s".into(), Dynamic::from(Secret::new("fuzz-secret-value", "t")));
            if let Ok(r) = render_text("t", &src, &m.into()) {
                // A rendered secret always marks the output secret.
                prop_assert!(r.secret || !r.text.contains("fuzz-secret-value"));
            }
        }
    }
}
