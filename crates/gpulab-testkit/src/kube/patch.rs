//! Patches: JSON merge patch (RFC 7386), a strategic merge patch approximation, JSON patch (RFC 6902),
//! and the field pruning that makes repeated server-side applies drop what a manager stopped applying.

use serde_json::{Map, Value};

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The key that identifies elements of a list of objects, as the real strategic-merge metadata would:
/// `name` (containers, volumes, env), `mountPath` (volumeMounts), `containerPort` (container ports),
/// `port` (service ports), `type` (conditions), `uid` (ownerReferences). `None`: the list is atomic.
fn merge_key(a: &[Value], b: &[Value]) -> Option<&'static str> {
    let all: Vec<&Value> = a.iter().chain(b).collect();
    if all.is_empty() || !all.iter().all(|v| v.is_object()) {
        return None;
    }
    ["name", "mountPath", "containerPort", "port", "type", "uid"]
        .into_iter()
        .find(|k| {
            all.iter()
                .all(|v| v.get(*k).is_some() || v.get("$patch").is_some())
        })
        // tolerations have no merge key; `key` must not be mistaken for one
        .filter(|_| {
            !all.iter()
                .any(|v| v.get("effect").is_some() || v.get("operator").is_some())
        })
}

/// A strategic merge patch, approximated: objects merge like a merge patch; lists of objects with a
/// merge key (see [`merge_key`]) merge element by element (`$patch: delete` removes one); other lists
/// are replaced. Directives (`$setElementOrder/...`, `$retainKeys`, `$deleteFromPrimitiveList/...`)
/// are ignored.
pub(crate) fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut clean = patch.clone();
        clean.as_object_mut().expect("object").remove("$patch");
        *target = clean;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Array(items) => {
                let existing = t.get(k).and_then(Value::as_array).cloned();
                match existing
                    .as_deref()
                    .and_then(|e| merge_key(e, items).map(|key| (e, key)))
                {
                    Some((e, key)) => {
                        t.insert(k.clone(), Value::Array(merge_list(e, items, key)));
                    }
                    None => {
                        t.insert(k.clone(), Value::Array(items.iter().map(clean).collect()));
                    }
                }
            }
            _ => strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v),
        }
    }
}

/// Without `$` directives.
fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), clean(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(clean).collect()),
        other => other.clone(),
    }
}

fn merge_list(existing: &[Value], patch: &[Value], key: &str) -> Vec<Value> {
    let mut out: Vec<Value> = existing.to_vec();
    for item in patch {
        let id = &item[key];
        let pos = out.iter().position(|e| &e[key] == id);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut out[i], item),
            (None, false) => out.push(clean(item)),
        }
    }
    out
}

/// Remove from `target` what the manager applied before (`prev`) but no longer applies (`now`).
pub(crate) fn prune_unapplied(target: &mut Value, prev: &Value, now: &Value) {
    match (target, prev, now) {
        (Value::Object(t), Value::Object(p), Value::Object(n)) => {
            for (k, pv) in p {
                match n.get(k) {
                    None => {
                        t.remove(k);
                    }
                    Some(nv) => {
                        if let Some(tv) = t.get_mut(k) {
                            prune_unapplied(tv, pv, nv);
                        }
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(p), Value::Array(n)) => {
            if let Some(key) = merge_key(p, n) {
                for pv in p {
                    let id = &pv[key];
                    match n.iter().find(|nv| &nv[key] == id) {
                        None => t.retain(|tv| &tv[key] != id),
                        Some(nv) => {
                            if let Some(tv) = t.iter_mut().find(|tv| &tv[key] == id) {
                                prune_unapplied(tv, pv, nv);
                            }
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

fn unescape(seg: &str) -> String {
    seg.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<(Vec<String>, String), String> {
    if path.is_empty() {
        return Err("the root cannot be patched".into());
    }
    let segs: Vec<String> = path
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid path {path:?}"))?
        .split('/')
        .map(unescape)
        .collect();
    let (last, parents) = segs.split_last().expect("at least one segment");
    Ok((parents.to_vec(), last.clone()))
}

fn walk<'a>(root: &'a mut Value, segs: &[String]) -> Result<&'a mut Value, String> {
    let mut v = root;
    for s in segs {
        v = match v {
            Value::Object(m) => m.get_mut(s),
            Value::Array(a) => s.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("path segment {s:?} does not exist"))?;
    }
    Ok(v)
}

fn get_at(root: &mut Value, path: &str) -> Result<Value, String> {
    let (parents, last) = split_pointer(path)?;
    let mut full = parents;
    full.push(last);
    walk(root, &full).map(|v| v.clone())
}

fn remove_at(root: &mut Value, path: &str) -> Result<Value, String> {
    let (parents, last) = split_pointer(path)?;
    match walk(root, &parents)? {
        Value::Object(m) => m
            .remove(&last)
            .ok_or_else(|| format!("unable to remove nonexistent key: {last}")),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| format!("invalid index {last}"))?;
            (i < a.len())
                .then(|| a.remove(i))
                .ok_or_else(|| format!("index {i} out of bounds"))
        }
        _ => Err(format!("cannot remove {path}")),
    }
}

fn add_at(root: &mut Value, path: &str, value: Value, replace: bool) -> Result<(), String> {
    let (parents, last) = split_pointer(path)?;
    match walk(root, &parents)? {
        Value::Object(m) => {
            if replace && !m.contains_key(&last) {
                return Err(format!(
                    "replace operation does not apply: doc is missing key: {path}"
                ));
            }
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" && !replace {
                a.push(value);
                return Ok(());
            }
            let i: usize = last.parse().map_err(|_| format!("invalid index {last}"))?;
            if replace {
                *a.get_mut(i)
                    .ok_or_else(|| format!("index {i} out of bounds"))? = value;
            } else if i <= a.len() {
                a.insert(i, value);
            } else {
                return Err(format!("index {i} out of bounds"));
            }
            Ok(())
        }
        _ => Err(format!("cannot add at {path}")),
    }
}

/// RFC 6902 JSON patch: `add`, `remove`, `replace`, `move`, `copy`, `test`.
pub(crate) fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch is an array of operations")?;
    for op in ops {
        let path = op["path"].as_str().ok_or("operation without a path")?;
        let value = || op.get("value").cloned().ok_or("operation without a value");
        match op["op"].as_str().unwrap_or("") {
            "add" => add_at(target, path, value()?, false)?,
            "replace" => add_at(target, path, value()?, true)?,
            "remove" => {
                remove_at(target, path)?;
            }
            "test" => {
                if get_at(target, path)? != value()? {
                    return Err(format!("testing value {path} failed"));
                }
            }
            "move" | "copy" => {
                let from = op["from"].as_str().ok_or("operation without from")?;
                let v = if op["op"] == "move" {
                    remove_at(target, from)?
                } else {
                    get_at(target, from)?
                };
                add_at(target, path, v, false)?;
            }
            other => return Err(format!("unexpected kind: {other}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_and_strategic() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        merge_patch(&mut t, &json!({"a": null, "b": {"c": 5}, "l": [3]}));
        assert_eq!(t, json!({"b": {"c": 5, "d": 3}, "l": [3]}));

        let mut pod = json!({"containers": [{"name": "a", "image": "x", "args": ["1"]}, {"name": "b", "image": "y"}]});
        strategic_merge(
            &mut pod,
            &json!({"$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "a", "image": "z"}, {"name": "b", "$patch": "delete"}]}),
        );
        assert_eq!(
            pod,
            json!({"containers": [{"name": "a", "image": "z", "args": ["1"]}]})
        );

        let mut tol = json!({"t": [{"key": "a", "operator": "Exists"}]});
        strategic_merge(
            &mut tol,
            &json!({"t": [{"key": "b", "operator": "Exists"}]}),
        );
        assert_eq!(tol, json!({"t": [{"key": "b", "operator": "Exists"}]}));
    }

    #[test]
    fn pruning() {
        let mut t =
            json!({"data": {"a": "1", "b": "2", "mine": "x"}, "l": [{"name": "p"}, {"name": "q"}]});
        prune_unapplied(
            &mut t,
            &json!({"data": {"a": "1", "mine": "x"}, "l": [{"name": "p"}, {"name": "q"}]}),
            &json!({"data": {"a": "1"}, "l": [{"name": "p"}]}),
        );
        assert_eq!(
            t,
            json!({"data": {"a": "1", "b": "2"}, "l": [{"name": "p"}]})
        );
    }

    #[test]
    fn json_patches() {
        let mut t = json!({"a": [1, 2], "b": {"c": 1}});
        json_patch(
            &mut t,
            &json!([
                {"op": "add", "path": "/a/-", "value": 3},
                {"op": "replace", "path": "/b/c", "value": 2},
                {"op": "test", "path": "/b/c", "value": 2},
                {"op": "copy", "from": "/b", "path": "/d"},
                {"op": "remove", "path": "/a/0"},
            ]),
        )
        .unwrap();
        assert_eq!(t, json!({"a": [2, 3], "b": {"c": 2}, "d": {"c": 2}}));
        assert!(json_patch(&mut t, &json!([{"op": "test", "path": "/b/c", "value": 9}])).is_err());
    }
}
