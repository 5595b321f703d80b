//! The argument checks of QEMU's input visitor (qapi/qobject-input-visitor.c,
//! qapi/qapi-visit-core.c and the generated visitors): members in schema order, each one
//! missing or mistyped, then the first unvisited key in GLib hash-table order; texts,
//! including `full_name` paths such as `vcpus[0].online`, exactly as QEMU writes them.
//!
//! The walk is driven by the schema, never by the input, so its depth is bounded by the
//! schema's nesting whatever the input holds.

use super::hash_order::{qdict_order, GHashSet};
use super::schema::{AlternateType, ArgType, EnumType, Member, QType};
use crate::wire::{Object, Value};

/// Checks `args` against `members`, returning the desc of the first error QEMU reports.
pub(crate) fn check_arguments(members: &[Member], args: &Object) -> Result<(), String> {
    let mut visitor = Visitor { stack: Vec::new() };
    visitor.visit_root(members, args)
}

/// One open container, innermost last; it names itself for `full_name`.
enum Frame<'a> {
    Dict {
        name: Option<&'a str>,
        object: &'a Object,
        unvisited: GHashSet<'a>,
    },
    List {
        name: Option<&'a str>,
        items: &'a [Value],
        next: usize,
        /// QEMU's `index`, which starts at -1 as an unsigned and counts consumed items.
        index: u32,
    },
}

struct Visitor<'a> {
    stack: Vec<Frame<'a>>,
}

fn qtype(value: &Value) -> Option<QType> {
    match value {
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => Some(QType::Number),
        Value::String(_) => Some(QType::String),
        Value::Bool(_) => Some(QType::Bool),
        _ => None,
    }
}

fn type_error(full_name: &str, expected: &str) -> String {
    format!("Invalid parameter type for '{full_name}', expected: {expected}")
}

impl<'a> Visitor<'a> {
    /// QEMU's `full_name`: the path of `name` inside the open containers.
    fn full_name(&self, name: Option<&str>) -> String {
        // Built back to front, as QEMU prepends.
        let mut parts: Vec<String> = Vec::new();
        let mut name: Option<&str> = name;
        for frame in self.stack.iter().rev() {
            match frame {
                Frame::Dict { name: own, .. } => {
                    parts.push(name.unwrap_or("<anonymous>").to_owned());
                    parts.push(".".to_owned());
                    name = *own;
                }
                Frame::List {
                    name: own, index, ..
                } => {
                    parts.push(format!("[{index}]"));
                    name = *own;
                }
            }
        }
        let mut out: String = parts.iter().rev().map(String::as_str).collect();
        if let Some(name) = name {
            out.insert_str(0, name);
        } else if out.starts_with('.') {
            out.remove(0);
        } else if out.is_empty() {
            return "<anonymous>".to_owned();
        }
        out
    }

    /// `qobject_input_try_get_object`: the named member of the innermost object, or the
    /// next item of the innermost list; `consume` marks it visited.
    fn try_get(&mut self, name: Option<&str>, consume: bool) -> Option<&'a Value> {
        match self.stack.last_mut()? {
            Frame::Dict {
                object, unvisited, ..
            } => {
                let value = object.get(name?)?;
                if consume {
                    if let Some(key) = name {
                        unvisited.remove(key);
                    }
                }
                Some(value)
            }
            Frame::List {
                items, next, index, ..
            } => {
                let value = items.get(*next);
                if consume {
                    if value.is_some() {
                        *next += 1;
                    }
                    *index = index.wrapping_add(1);
                }
                value
            }
        }
    }

    fn get(&mut self, name: Option<&str>, consume: bool) -> Result<&'a Value, String> {
        match self.try_get(name, consume) {
            Some(value) => Ok(value),
            None => Err(format!("Parameter '{}' is missing", self.full_name(name))),
        }
    }

    fn push_object(&mut self, name: Option<&'a str>, object: &'a Object) {
        let mut unvisited = GHashSet::new();
        for (key, _) in qdict_order(object) {
            unvisited.insert(key);
        }
        self.stack.push(Frame::Dict {
            name,
            object,
            unvisited,
        });
    }

    /// `visit_check_struct` then `visit_end_struct`: the first key left over is reported.
    fn check_and_pop_struct(&mut self) -> Result<(), String> {
        let leftover = match self.stack.last() {
            Some(Frame::Dict { unvisited, .. }) => unvisited.first(),
            _ => None,
        };
        let result = match leftover {
            Some(key) => Err(format!(
                "Parameter '{}' is unexpected",
                self.full_name(Some(key))
            )),
            None => Ok(()),
        };
        self.stack.pop();
        result
    }

    fn visit_root(&mut self, members: &[Member], args: &'a Object) -> Result<(), String> {
        self.push_object(None, args);
        self.visit_members(members)?;
        self.check_and_pop_struct()
    }

    fn visit_members(&mut self, members: &[Member]) -> Result<(), String> {
        for member in members {
            if member.optional && self.try_get(Some(member.name), false).is_none() {
                continue;
            }
            self.visit(&member.ty, Some(member.name))?;
        }
        Ok(())
    }

    fn visit(&mut self, ty: &ArgType, name: Option<&'a str>) -> Result<(), String> {
        match ty {
            ArgType::Int => {
                let value = self.get(name, true)?;
                if value.as_i64().is_none() {
                    return Err(type_error(&self.full_name(name), "integer"));
                }
                Ok(())
            }
            ArgType::Uint64 => {
                let value = self.get(name, true)?;
                if value.as_u64().is_none() && value.as_i64().is_none() {
                    return Err(format!(
                        "Parameter '{}' expects uint64",
                        self.full_name(name)
                    ));
                }
                Ok(())
            }
            ArgType::Str => self.visit_str(name).map(|_| ()),
            ArgType::Bool => {
                let value = self.get(name, true)?;
                if value.as_bool().is_none() {
                    return Err(type_error(&self.full_name(name), "boolean"));
                }
                Ok(())
            }
            ArgType::Enum(enumeration) => self.visit_enum(enumeration, name),
            ArgType::Alternate(alternate) => self.visit_alternate(alternate, name),
            ArgType::List(element) => self.visit_list(element, name),
            ArgType::Struct(structure) => {
                let value = self.get(name, true)?;
                let Value::Object(object) = value else {
                    return Err(type_error(&self.full_name(name), "object"));
                };
                self.push_object(name, object);
                let members = self.visit_members(structure.members);
                match members {
                    Ok(()) => self.check_and_pop_struct(),
                    Err(e) => {
                        self.stack.pop();
                        Err(e)
                    }
                }
            }
        }
    }

    fn visit_str(&mut self, name: Option<&str>) -> Result<&'a str, String> {
        let value = self.get(name, true)?;
        value
            .as_str()
            .ok_or_else(|| type_error(&self.full_name(name), "string"))
    }

    /// QEMU's `input_type_enum`: a string first, then one of the values; this error names
    /// the member alone, not its full path.
    fn visit_enum(&mut self, enumeration: &EnumType, name: Option<&str>) -> Result<(), String> {
        let text = self.visit_str(name)?;
        if enumeration.values.contains(&text) {
            Ok(())
        } else {
            Err(format!(
                "Parameter '{}' does not accept value '{text}'",
                name.unwrap_or("null")
            ))
        }
    }

    /// The generated alternate visitor: the branch is chosen by the value's JSON type; no
    /// branch gives a type error that names the member alone and the alternate's type.
    fn visit_alternate(
        &mut self,
        alternate: &AlternateType,
        name: Option<&'a str>,
    ) -> Result<(), String> {
        let value = self.get(name, false)?;
        let branch = qtype(value).and_then(|q| {
            alternate
                .branches
                .iter()
                .find(|(branch_q, _)| *branch_q == q)
                .map(|(_, ty)| ty)
        });
        match branch {
            Some(ty) => self.visit(ty, name),
            None => Err(type_error(name.unwrap_or("null"), alternate.name)),
        }
    }

    fn visit_list(&mut self, element: &ArgType, name: Option<&'a str>) -> Result<(), String> {
        let value = self.get(name, true)?;
        let Value::Array(items) = value else {
            return Err(type_error(&self.full_name(name), "array"));
        };
        self.stack.push(Frame::List {
            name,
            items,
            next: 0,
            index: u32::MAX,
        });
        let mut result = Ok(());
        while result.is_ok() && self.list_has_more() {
            result = self.visit(element, None);
        }
        self.stack.pop();
        result
    }

    fn list_has_more(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::List { items, next, .. }) if *next < items.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::schema::COMMANDS;
    use crate::agent::AgentVersion;
    use rstest::rstest;

    fn args(json: &str) -> Object {
        crate::agent::test_json::object(json)
    }

    fn check(command: &str, version: AgentVersion, json: &str) -> Result<(), String> {
        let spec = COMMANDS
            .iter()
            .find(|c| c.name == command)
            .expect("command in table");
        check_arguments(spec.members(version), &args(json))
    }

    fn check72(command: &str, json: &str) -> Result<(), String> {
        check(command, AgentVersion::V7_2_22, json)
    }

    #[rstest]
    #[case::ok("guest-sync", r#"{"id":1}"#, Ok(()))]
    #[case::missing("guest-sync", r#"{}"#, Err("Parameter 'id' is missing"))]
    #[case::missing_with_other("guest-sync", r#"{"foo":2}"#, Err("Parameter 'id' is missing"))]
    #[case::case_sensitive("guest-sync", r#"{"ID":1}"#, Err("Parameter 'id' is missing"))]
    #[case::type_before_leftover(
        "guest-sync",
        r#"{"id":"x","foo":1}"#,
        Err("Invalid parameter type for 'id', expected: integer")
    )]
    #[case::float(
        "guest-sync",
        r#"{"id":1.0}"#,
        Err("Invalid parameter type for 'id', expected: integer")
    )]
    #[case::u64(
        "guest-sync",
        r#"{"id":9223372036854775808}"#,
        Err("Invalid parameter type for 'id', expected: integer")
    )]
    #[case::null(
        "guest-sync",
        r#"{"id":null}"#,
        Err("Invalid parameter type for 'id', expected: integer")
    )]
    #[case::unexpected("guest-sync", r#"{"id":1,"x":2}"#, Err("Parameter 'x' is unexpected"))]
    #[case::leftover_bar(
        "guest-sync",
        r#"{"id":1,"foo":2,"bar":3}"#,
        Err("Parameter 'bar' is unexpected")
    )]
    #[case::leftover_aa(
        "guest-sync",
        r#"{"id":1,"zz":3,"aa":2}"#,
        Err("Parameter 'aa' is unexpected")
    )]
    #[case::ping_extra("guest-ping", r#"{"x":1}"#, Err("Parameter 'x' is unexpected"))]
    #[case::ping_empty("guest-ping", r#"{}"#, Ok(()))]
    #[case::username_type(
        "guest-ssh-get-authorized-keys",
        r#"{"username":1}"#,
        Err("Invalid parameter type for 'username', expected: string")
    )]
    #[case::whence_int("guest-file-seek", r#"{"handle":1,"offset":0,"whence":0}"#, Ok(()))]
    #[case::whence_name("guest-file-seek", r#"{"handle":1,"offset":0,"whence":"end"}"#, Ok(()))]
    #[case::whence_bad_name(
        "guest-file-seek",
        r#"{"handle":1,"offset":0,"whence":"bogus"}"#,
        Err("Parameter 'whence' does not accept value 'bogus'")
    )]
    #[case::whence_bool(
        "guest-file-seek",
        r#"{"handle":1,"offset":0,"whence":true}"#,
        Err("Invalid parameter type for 'whence', expected: GuestFileWhence")
    )]
    #[case::whence_float(
        "guest-file-seek",
        r#"{"handle":1,"offset":0,"whence":1.5}"#,
        Err("Invalid parameter type for 'whence', expected: integer")
    )]
    #[case::whence_missing(
        "guest-file-seek",
        r#"{"handle":1,"offset":0}"#,
        Err("Parameter 'whence' is missing")
    )]
    #[case::vcpus_not_array(
        "guest-set-vcpus",
        r#"{"vcpus":{}}"#,
        Err("Invalid parameter type for 'vcpus', expected: array")
    )]
    #[case::vcpu_not_object(
        "guest-set-vcpus",
        r#"{"vcpus":[{"logical-id":0,"online":true},5]}"#,
        Err("Invalid parameter type for 'vcpus[1]', expected: object")
    )]
    #[case::vcpu_missing_member(
        "guest-set-vcpus",
        r#"{"vcpus":[{"online":true}]}"#,
        Err("Parameter 'vcpus[0].logical-id' is missing")
    )]
    #[case::vcpu_member_type(
        "guest-set-vcpus",
        r#"{"vcpus":[{"logical-id":0,"online":1}]}"#,
        Err("Invalid parameter type for 'vcpus[0].online', expected: boolean")
    )]
    #[case::vcpu_leftover(
        "guest-set-vcpus",
        r#"{"vcpus":[{"logical-id":0,"online":true},{"logical-id":1,"online":true,"x":1}]}"#,
        Err("Parameter 'vcpus[1].x' is unexpected")
    )]
    #[case::vcpus_empty("guest-set-vcpus", r#"{"vcpus":[]}"#, Ok(()))]
    #[case::phys_index(
        "guest-set-memory-blocks",
        r#"{"mem-blks":[{"phys-index":"x","online":true}]}"#,
        Err("Parameter 'mem-blks[0].phys-index' expects uint64")
    )]
    #[case::phys_index_negative_ok(
        "guest-set-memory-blocks",
        r#"{"mem-blks":[{"phys-index":-1,"online":true}]}"#,
        Ok(())
    )]
    #[case::phys_index_u64_ok(
        "guest-set-memory-blocks",
        r#"{"mem-blks":[{"phys-index":18446744073709551615,"online":true}]}"#,
        Ok(())
    )]
    #[case::arg_item_type(
        "guest-exec",
        r#"{"path":"/bin/true","arg":["a",1]}"#,
        Err("Invalid parameter type for 'arg[1]', expected: string")
    )]
    #[case::capture_bool_ok("guest-exec", r#"{"path":"/bin/true","capture-output":true}"#, Ok(()))]
    #[case::capture_mode_in_7_2(
        "guest-exec",
        r#"{"path":"/bin/true","capture-output":"merged"}"#,
        Err("Invalid parameter type for 'capture-output', expected: boolean")
    )]
    #[case::optional_null(
        "guest-shutdown",
        r#"{"mode":null}"#,
        Err("Invalid parameter type for 'mode', expected: string")
    )]
    #[case::schema_order(
        "guest-set-user-password",
        r#"{"crypted":1,"password":2}"#,
        Err("Parameter 'username' is missing")
    )]
    fn seven_two_argument_checks(
        #[case] command: &str,
        #[case] json: &str,
        #[case] expected: Result<(), &str>,
    ) {
        assert_eq!(check72(command, json), expected.map_err(str::to_owned));
    }

    #[rstest]
    #[case::bool_before_8_1("8.0.0", r#"{"path":"p","capture-output":true}"#, Ok(()))]
    #[case::mode_before_8_1(
        "8.0.0",
        r#"{"path":"p","capture-output":"merged"}"#,
        Err("Invalid parameter type for 'capture-output', expected: boolean")
    )]
    #[case::mode_from_8_1("8.1.0", r#"{"path":"p","capture-output":"stdout"}"#, Ok(()))]
    #[case::bool_from_8_1("8.1.0", r#"{"path":"p","capture-output":false}"#, Ok(()))]
    #[case::bad_mode(
        "8.1.0",
        r#"{"path":"p","capture-output":"both"}"#,
        Err("Parameter 'capture-output' does not accept value 'both'")
    )]
    #[case::number(
        "8.1.0",
        r#"{"path":"p","capture-output":1}"#,
        Err("Invalid parameter type for 'capture-output', expected: GuestExecCaptureOutput")
    )]
    #[case::null(
        "9.1.0",
        r#"{"path":"p","capture-output":null}"#,
        Err("Invalid parameter type for 'capture-output', expected: GuestExecCaptureOutput")
    )]
    fn capture_output_by_version(
        #[case] version: &str,
        #[case] json: &str,
        #[case] expected: Result<(), &str>,
    ) {
        let version: AgentVersion = version.parse().expect("version");
        assert_eq!(
            check("guest-exec", version, json),
            expected.map_err(str::to_owned)
        );
    }

    #[test]
    fn whence_was_an_int_before_2_6() {
        let version = AgentVersion::new(2, 5, 0);
        assert_eq!(
            check(
                "guest-file-seek",
                version,
                r#"{"handle":1,"offset":0,"whence":"set"}"#
            ),
            Err("Invalid parameter type for 'whence', expected: integer".to_owned())
        );
    }

    #[test]
    fn full_name_of_the_root_is_anonymous() {
        let visitor = Visitor { stack: Vec::new() };
        assert_eq!(visitor.full_name(None), "<anonymous>");
        assert_eq!(visitor.full_name(Some("id")), "id");
    }

    #[test]
    fn many_unexpected_keys_report_one_from_the_grown_table() {
        // 40 extra keys make the table grow twice; the check must still name one of them.
        let mut object = Object::new().with("id", Value::Int(1));
        for i in 0..40 {
            object.insert(format!("k{i}"), Value::Int(i));
        }
        let spec = COMMANDS.iter().find(|c| c.name == "guest-sync");
        let spec = spec.expect("guest-sync");
        let error = check_arguments(spec.members(AgentVersion::V7_2_22), &object);
        let desc = error.expect_err("unexpected keys");
        assert!(desc.starts_with("Parameter 'k") && desc.ends_with("' is unexpected"));
    }
}
