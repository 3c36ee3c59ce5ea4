//! Cross-checks our declarative class/method table, the basic properties, the
//! reply codes and the frame constants against RabbitMQ's machine-readable
//! specification (`amqp-rabbitmq-0.9.1.json`, kept in `../shared/spec`
//! next to the workspace, or in the directory `AMQP_SPEC_DIR` names).
//!
//! The specification files are reference material outside the project,
//! which must build and pass its tests without them: where they are absent
//! the cross-check says so on stderr and checks nothing.

use std::collections::HashMap;
use std::path::PathBuf;

use amqp_proto::codec::BASIC_PROPERTIES;
use amqp_proto::spec::constants::{
    ReplyCode, FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_MIN_SIZE,
};
use amqp_proto::spec::{FieldType, CLASSES, METHODS};
use serde_json::Value;

fn spec_path() -> PathBuf {
    let directory = std::env::var_os("AMQP_SPEC_DIR").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("..")
                .join("shared")
                .join("spec")
        },
        PathBuf::from,
    );
    directory.join("amqp-rabbitmq-0.9.1.json")
}

/// Loads the JSON, or `None` (after saying so) when it is absent. When
/// `AMQP_SPEC_DIR` is set the file must be there.
fn load_spec() -> Option<Value> {
    let path = spec_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if std::env::var_os("AMQP_SPEC_DIR").is_some() => {
            panic!(
                "AMQP_SPEC_DIR is set but {} cannot be read: {error}",
                path.display()
            )
        }
        Err(error) => {
            eprintln!(
                "NOTE: RabbitMQ's spec is not at {} ({error}): cross-check not run; \
                 set AMQP_SPEC_DIR to run it",
                path.display()
            );
            return None;
        }
    };
    Some(
        serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("{} is not valid JSON: {error}", path.display())),
    )
}

fn primitive(name: &str) -> Option<FieldType> {
    Some(match name {
        "octet" => FieldType::octet,
        "short" => FieldType::short,
        "long" => FieldType::long,
        "longlong" => FieldType::longlong,
        "bit" => FieldType::bit,
        "shortstr" => FieldType::shortstr,
        "longstr" => FieldType::longstr,
        "table" => FieldType::table,
        "timestamp" => FieldType::timestamp,
        _ => return None,
    })
}

fn str_of<'a>(value: &'a Value, key: &str, context: &str) -> &'a str {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{context}: missing string \"{key}\""))
}

fn u64_of(value: &Value, key: &str, context: &str) -> u64 {
    value
        .get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{context}: missing integer \"{key}\""))
}

fn array_of<'a>(value: &'a Value, key: &str, context: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{context}: missing array \"{key}\""))
}

fn flag(value: &Value, key: &str) -> bool {
    value.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// The domain table: domain name → primitive type.
fn domains(spec: &Value) -> HashMap<String, FieldType> {
    let mut domains = HashMap::new();
    for entry in array_of(spec, "domains", "spec") {
        let pair = entry.as_array().expect("a domain is a [name, type] pair");
        let (Some(name), Some(ty)) = (
            pair.first().and_then(Value::as_str),
            pair.get(1).and_then(Value::as_str),
        ) else {
            panic!("malformed domain entry {entry}");
        };
        let ty = primitive(ty).unwrap_or_else(|| panic!("domain {name} has unknown type {ty}"));
        domains.insert(name.to_owned(), ty);
    }
    domains
}

/// The wire type of a JSON argument or property: its "type", or its
/// "domain" resolved through the domain table.
fn wire_type(
    arg: &Value,
    domains: &HashMap<String, FieldType>,
    context: &str,
) -> Result<FieldType, String> {
    if let Some(ty) = arg.get("type").and_then(Value::as_str) {
        return primitive(ty).ok_or_else(|| format!("{context}: unknown primitive type {ty:?}"));
    }
    if let Some(domain) = arg.get("domain").and_then(Value::as_str) {
        return domains
            .get(domain)
            .copied()
            .ok_or_else(|| format!("{context}: unknown domain {domain:?}"));
    }
    Err(format!(
        "{context}: argument has neither \"type\" nor \"domain\""
    ))
}

fn normalise(name: &str) -> String {
    name.replace('_', "-")
}

fn check_methods(spec: &Value, mismatches: &mut Vec<String>) {
    let domains = domains(spec);
    let classes = array_of(spec, "classes", "spec");
    for class in classes {
        let class_name = str_of(class, "name", "class");
        let class_id = u64_of(class, "id", class_name);
        match CLASSES.iter().find(|(name, _)| *name == class_name) {
            None => mismatches.push(format!(
                "class {class_name} ({class_id}) missing from CLASSES"
            )),
            Some((_, ours)) if u64::from(*ours) != class_id => mismatches.push(format!(
                "class {class_name}: id is {ours} in CLASSES, {class_id} in the spec"
            )),
            Some(_) => {}
        }
        for method in array_of(class, "methods", class_name) {
            let method_name = str_of(method, "name", class_name);
            let full = format!("{class_name}.{method_name}");
            let method_id = u64_of(method, "id", &full);
            let Some(ours) = METHODS
                .iter()
                .find(|info| info.class == class_name && info.name == method_name)
            else {
                mismatches.push(format!(
                    "{full} ({class_id}/{method_id}) missing from METHODS"
                ));
                continue;
            };
            if u64::from(ours.id.class_id) != class_id || u64::from(ours.id.method_id) != method_id
            {
                mismatches.push(format!(
                    "{full}: id is {}/{} in METHODS, {class_id}/{method_id} in the spec",
                    ours.id.class_id, ours.id.method_id
                ));
            }
            let synchronous = flag(method, "synchronous");
            if ours.synchronous != synchronous {
                mismatches.push(format!(
                    "{full}: synchronous is {} in METHODS, {synchronous} in the spec",
                    ours.synchronous
                ));
            }
            let content = flag(method, "content");
            if ours.has_content != content {
                mismatches.push(format!(
                    "{full}: has_content is {} in METHODS, {content} in the spec",
                    ours.has_content
                ));
            }
            let mut theirs = Vec::new();
            for arg in array_of(method, "arguments", &full) {
                let arg_name = str_of(arg, "name", &full);
                match wire_type(arg, &domains, &format!("{full}.{arg_name}")) {
                    Ok(ty) => theirs.push((arg_name.to_owned(), ty)),
                    Err(error) => mismatches.push(error),
                }
            }
            let ours_fields: Vec<(String, FieldType)> = ours
                .fields
                .iter()
                .map(|field| (normalise(field.name), field.field_type))
                .collect();
            if ours_fields != theirs {
                mismatches.push(format!(
                    "{full}: fields differ\n      ours: {ours_fields:?}\n      spec: {theirs:?}"
                ));
            }
        }
    }

    // The reverse direction: nothing in our table the spec does not have.
    for info in METHODS {
        let found = classes.iter().any(|class| {
            class.get("name").and_then(Value::as_str) == Some(info.class)
                && class
                    .get("methods")
                    .and_then(Value::as_array)
                    .is_some_and(|methods| {
                        methods
                            .iter()
                            .any(|m| m.get("name").and_then(Value::as_str) == Some(info.name))
                    })
        });
        if !found {
            mismatches.push(format!(
                "{}.{} ({}/{}) is in METHODS but not in the spec",
                info.class, info.name, info.id.class_id, info.id.method_id
            ));
        }
    }
    for (name, id) in CLASSES {
        if !classes
            .iter()
            .any(|class| class.get("name").and_then(Value::as_str) == Some(name))
        {
            mismatches.push(format!(
                "class {name} ({id}) is in CLASSES but not in the spec"
            ));
        }
    }
}

fn check_basic_properties(spec: &Value, mismatches: &mut Vec<String>) {
    let domains = domains(spec);
    let Some(basic) = array_of(spec, "classes", "spec")
        .iter()
        .find(|class| class.get("name").and_then(Value::as_str) == Some("basic"))
    else {
        mismatches.push("the spec has no basic class".to_owned());
        return;
    };
    let mut theirs = Vec::new();
    for property in array_of(basic, "properties", "basic") {
        let name = str_of(property, "name", "basic property");
        match wire_type(property, &domains, &format!("basic property {name}")) {
            Ok(ty) => theirs.push((name.to_owned(), ty)),
            Err(error) => mismatches.push(error),
        }
    }
    let ours: Vec<(String, FieldType)> = BASIC_PROPERTIES
        .iter()
        .map(|(name, ty)| (normalise(name), *ty))
        .collect();
    if ours != theirs {
        mismatches.push(format!(
            "basic properties differ\n      ours: {ours:?}\n      spec: {theirs:?}"
        ));
    }
}

fn check_constants(spec: &Value, mismatches: &mut Vec<String>) {
    let frame_constants: [(&str, u64); 6] = [
        ("FRAME-METHOD", u64::from(FRAME_METHOD)),
        ("FRAME-HEADER", u64::from(FRAME_HEADER)),
        ("FRAME-BODY", u64::from(FRAME_BODY)),
        ("FRAME-HEARTBEAT", u64::from(FRAME_HEARTBEAT)),
        ("FRAME-END", u64::from(FRAME_END)),
        ("FRAME-MIN-SIZE", u64::from(FRAME_MIN_SIZE)),
    ];
    let constants = array_of(spec, "constants", "spec");
    for (name, ours) in frame_constants {
        match constants
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
        {
            None => mismatches.push(format!("constant {name} missing from the spec")),
            Some(constant) => {
                let theirs = u64_of(constant, "value", name);
                if theirs != ours {
                    mismatches.push(format!("constant {name}: ours {ours}, spec {theirs}"));
                }
            }
        }
    }

    let mut reply_codes = 0;
    for constant in constants {
        let name = str_of(constant, "name", "constant");
        let value = u64_of(constant, "value", name);
        let class = constant.get("class").and_then(Value::as_str);
        let is_reply_code = class.is_some() || name == "REPLY-SUCCESS";
        if !is_reply_code {
            if !name.starts_with("FRAME-") {
                mismatches.push(format!(
                    "constant {name} = {value} is not checked by this test"
                ));
            }
            continue;
        }
        reply_codes += 1;
        let Ok(code) = u16::try_from(value) else {
            mismatches.push(format!("reply code {name} = {value} does not fit a short"));
            continue;
        };
        let code = ReplyCode(code);
        let expected_name = name.to_ascii_lowercase();
        if code.name() != Some(expected_name.as_str()) {
            mismatches.push(format!(
                "ReplyCode({value}).name() is {:?}, the spec says {expected_name:?}",
                code.name()
            ));
        }
        let hard = match class {
            Some("hard-error") => true,
            Some("soft-error") | None => false,
            Some(other) => {
                mismatches.push(format!("reply code {name} has unknown class {other:?}"));
                continue;
            }
        };
        if code.is_hard_error() != hard {
            mismatches.push(format!(
                "ReplyCode({value}).is_hard_error() is {}, the spec classes {name} as {}",
                code.is_hard_error(),
                class.unwrap_or("no error")
            ));
        }
    }
    if reply_codes < 19 {
        mismatches.push(format!("only {reply_codes} reply codes found in the spec"));
    }
}

#[test]
fn our_table_matches_rabbitmqs_json_spec() {
    let Some(spec) = load_spec() else {
        return;
    };
    assert_eq!(spec["major-version"], 0);
    assert_eq!(spec["minor-version"], 9);
    assert_eq!(spec["revision"], 1);

    let mut mismatches = Vec::new();
    check_methods(&spec, &mut mismatches);
    check_basic_properties(&spec, &mut mismatches);
    check_constants(&spec, &mut mismatches);
    assert!(
        mismatches.is_empty(),
        "{} mismatch(es) between amqp_proto::spec and {}:\n  - {}",
        mismatches.len(),
        spec_path().display(),
        mismatches.join("\n  - ")
    );
}

/// The checker itself must notice a difference: feed it a doctored spec.
#[test]
fn the_cross_check_reports_doctored_differences() {
    let Some(mut spec) = load_spec() else {
        return;
    };
    let basic = spec["classes"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|class| class["name"] == "basic")
        .unwrap();
    let ack = basic["methods"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|method| method["name"] == "ack")
        .unwrap();
    ack["synchronous"] = Value::Bool(true);
    ack["arguments"][0] = serde_json::json!({"name": "delivery-tag", "domain": "long"});
    let mut mismatches = Vec::new();
    check_methods(&spec, &mut mismatches);
    assert_eq!(mismatches.len(), 2, "{mismatches:#?}");
    assert!(mismatches[0].contains("basic.ack: synchronous"));
    assert!(mismatches[1].contains("basic.ack: fields differ"));
}
