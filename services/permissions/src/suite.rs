//! The data-driven suite: every `testdata/*.yaml` file (schema, relationships, assertions,
//! expected resources and subjects) is evaluated and cross-checked across Check, CheckBulk,
//! LookupResources (paged one id at a time through its cursor), LookupSubjects and Expand, so
//! that the APIs cannot disagree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use crate::eval::{EvalError, Evaluator, ExpandNode, MemoryStore, ObjectRef, SubjectRef, Tuple};
use crate::schema::{ModuleSource, Schema, compile};

const IDENTITY: &str = include_str!("../../identity/schema.zed");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[allow(dead_code)]
    description: String,
    #[serde(default)]
    modules: BTreeMap<String, String>,
    /// Module files to include by path relative to the repository root (`services/tasks/schema.zed`).
    #[serde(default)]
    module_files: BTreeMap<String, String>,
    relationships: String,
    #[serde(default)]
    max_depth: Option<u32>,
    #[serde(default)]
    skip_lookups: bool,
    assertions: Assertions,
    #[serde(default)]
    expected_resources: Vec<ExpectedResources>,
    #[serde(default)]
    expected_subjects: Vec<ExpectedSubjects>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Assertions {
    #[serde(default, rename = "true")]
    yes: Vec<String>,
    #[serde(default, rename = "false")]
    no: Vec<String>,
    #[serde(default)]
    errors: Vec<ErrorAssertion>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorAssertion {
    check: String,
    error: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedResources {
    permission: String,
    subject: String,
    resources: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedSubjects {
    resource: String,
    subject_type: String,
    #[serde(default)]
    subject_relation: String,
    subjects: Vec<String>,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn load_case(path: &Path) -> (Case, Schema, MemoryStore) {
    let text = std::fs::read_to_string(path).expect("read case");
    let case: Case = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut sources: Vec<(String, String)> =
        vec![("identity".into(), IDENTITY.into()), ("permissions".into(), crate::SCHEMA.into())];
    for (m, f) in &case.module_files {
        let p = root().join("../..").join(f);
        sources.push((m.clone(), std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))));
    }
    sources.extend(case.modules.iter().map(|(m, s)| (m.clone(), s.clone())));
    let mods: Vec<ModuleSource<'_>> = sources.iter().map(|(m, s)| ModuleSource { module: m, source: s }).collect();
    let schema = compile(&mods).unwrap_or_else(|e| panic!("{}: schema errors {e:#?}", path.display()));
    let tuples: Vec<Tuple> = case
        .relationships
        .lines()
        .map(|l| l.split('#').collect::<Vec<_>>().join("#"))
        .map(|l| l.split("  ").next().unwrap_or("").trim().to_owned())
        .filter(|l| !l.is_empty())
        .map(|l| Tuple::parse(&l).unwrap_or_else(|| panic!("bad relationship `{l}`")))
        .collect();
    for t in &tuples {
        assert!(
            schema.relation(&t.resource.ty, &t.relation).is_some(),
            "{}: `{t}` is not on a relation of the schema",
            path.display()
        );
    }
    (case, schema, MemoryStore::new(tuples))
}

/// `type:id#permission@type:id[#relation]`
fn parse_check(s: &str) -> (ObjectRef, String, SubjectRef) {
    let s = s.split_whitespace().next().unwrap_or("");
    let t = Tuple::parse(s).unwrap_or_else(|| panic!("bad check `{s}`"));
    (t.resource, t.relation, t.subject)
}

fn code(e: &EvalError) -> &'static str {
    match e {
        EvalError::UnknownPermission { .. } => "UNKNOWN_PERMISSION",
        EvalError::MaxDepth { .. } => "MAX_DEPTH_EXCEEDED",
        EvalError::Store(_) => "UNAVAILABLE",
    }
}

fn render_subjects(found: &[crate::eval::FoundSubject]) -> Vec<String> {
    found
        .iter()
        .map(|f| {
            let mut s = f.id.clone();
            for x in &f.excluded {
                s.push_str(&format!(" -{x}"));
            }
            s
        })
        .collect()
}

/// Whether an Expand tree grants `subject`, expanding subject-set leaves with further Expand calls
/// (as a client would). Independent of Check.
async fn expand_has(
    ev: &mut Evaluator<'_, MemoryStore>,
    node: &ExpandNode,
    subject: &SubjectRef,
    path: &mut BTreeSet<(ObjectRef, String)>,
) -> bool {
    match node {
        ExpandNode::Nil => false,
        ExpandNode::Permission { child, .. } => Box::pin(expand_has(ev, child, subject, path)).await,
        ExpandNode::Union(v) => {
            for x in v {
                if Box::pin(expand_has(ev, x, subject, path)).await {
                    return true;
                }
            }
            false
        }
        ExpandNode::Intersection(v) => {
            for x in v {
                if !Box::pin(expand_has(ev, x, subject, path)).await {
                    return false;
                }
            }
            true
        }
        ExpandNode::Exclusion(l, r) => {
            Box::pin(expand_has(ev, l, subject, path)).await && !Box::pin(expand_has(ev, r, subject, path)).await
        }
        ExpandNode::Relation { subjects, .. } | ExpandNode::Arrow { subjects, .. } => {
            for s in subjects {
                if s == subject || (s.id == "*" && s.ty == subject.ty && subject.relation.is_empty()) {
                    return true;
                }
                if !s.relation.is_empty() && s.id != "*" {
                    let key = (ObjectRef::new(&s.ty, &s.id), s.relation.clone());
                    if path.contains(&key) {
                        continue;
                    }
                    let Ok(tree) = ev.expand(&key.0, &key.1).await else { continue };
                    path.insert(key.clone());
                    let r = Box::pin(expand_has(ev, &tree, subject, path)).await;
                    path.remove(&key);
                    if r {
                        return true;
                    }
                }
            }
            false
        }
    }
}

async fn run_case(path: &Path) {
    let name = path.display().to_string();
    let (case, schema, store) = load_case(path);
    let depth = case.max_depth.unwrap_or(crate::eval::DEFAULT_MAX_DEPTH);
    type Item<'a> = ((ObjectRef, String, SubjectRef), Result<bool, &'a str>, &'a str);
    let mut all: Vec<Item<'_>> = Vec::new();
    for s in &case.assertions.yes {
        all.push((parse_check(s), Ok(true), s));
    }
    for s in &case.assertions.no {
        all.push((parse_check(s), Ok(false), s));
    }
    for e in &case.assertions.errors {
        all.push((parse_check(&e.check), Err(e.error.as_str()), &e.check));
    }
    // Check, each on a fresh evaluator.
    for ((r, p, s), want, text) in &all {
        let mut ev = Evaluator::new(&schema, store.clone(), depth);
        let got = ev.check(r, p, s).await.map_err(|e| code(&e));
        assert_eq!(got, *want, "{name}: Check {text}");
    }
    // CheckBulk: all items at once, sharing one evaluator.
    let items: Vec<_> = all.iter().map(|(c, _, _)| c.clone()).collect();
    let mut ev = Evaluator::new(&schema, store.clone(), depth);
    let bulk = ev.check_bulk(&items).await;
    for ((_, want, text), got) in all.iter().zip(bulk) {
        assert_eq!(got.map_err(|e| code(&e)), *want, "{name}: CheckBulk {text}");
    }
    // Lookups and Expand agree with every true/false assertion.
    for ((r, p, s), want, text) in &all {
        let Ok(want) = want else { continue };
        if !case.skip_lookups {
            let ids = lookup_all(&schema, &store, depth, &r.ty, p, s).await;
            assert_eq!(ids.contains(&r.id), *want, "{name}: LookupResources disagrees with {text}: {ids:?}");
            let mut ev = Evaluator::new(&schema, store.clone(), depth);
            let found = ev.lookup_subjects(r, p, &s.ty, &s.relation).await.expect("lookup subjects");
            let listed = found.iter().any(|f| f.id == s.id)
                || (s.relation.is_empty() && found.iter().any(|f| f.id == "*" && !f.excluded.contains(&s.id)));
            assert_eq!(listed, *want, "{name}: LookupSubjects disagrees with {text}: {found:?}");
        }
        let mut ev = Evaluator::new(&schema, store.clone(), depth);
        let tree = ev.expand(r, p).await.expect("expand");
        let mut path = BTreeSet::from([(r.clone(), p.clone())]);
        assert_eq!(
            expand_has(&mut ev, &tree, s, &mut path).await,
            *want,
            "{name}: Expand disagrees with {text}: {tree:#?}"
        );
    }
    for e in &case.expected_resources {
        let (ty, perm) = e.permission.split_once('#').expect("type#permission");
        let (sty, sid) = e.subject.split_once(':').expect("type:id");
        let ids = lookup_all(&schema, &store, depth, ty, perm, &SubjectRef::new(sty, sid)).await;
        assert_eq!(ids, e.resources, "{name}: LookupResources {} for {}", e.permission, e.subject);
        for id in &e.resources {
            let mut ev = Evaluator::new(&schema, store.clone(), depth);
            assert!(ev.check(&ObjectRef::new(ty, id), perm, &SubjectRef::new(sty, sid)).await.unwrap_or(false));
        }
    }
    for e in &case.expected_subjects {
        let t = Tuple::parse(&format!("{}@x:y", e.resource)).expect("type:id#permission");
        let mut ev = Evaluator::new(&schema, store.clone(), depth);
        let found =
            ev.lookup_subjects(&t.resource, &t.relation, &e.subject_type, &e.subject_relation).await.expect("lookup");
        assert_eq!(render_subjects(&found), e.subjects, "{name}: LookupSubjects {}", e.resource);
        for f in found.iter().filter(|f| f.id != "*") {
            let s = SubjectRef::set(&e.subject_type, &f.id, &e.subject_relation);
            let mut ev = Evaluator::new(&schema, store.clone(), depth);
            assert_eq!(ev.check(&t.resource, &t.relation, &s).await, Ok(true), "{name}: {} {s}", e.resource);
        }
    }
}

/// LookupResources one id per page, following the cursor; asserts there are no duplicates.
async fn lookup_all(
    schema: &Schema,
    store: &MemoryStore,
    depth: u32,
    ty: &str,
    perm: &str,
    s: &SubjectRef,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut ev = Evaluator::new(schema, store.clone(), depth);
        let (ids, more) = ev.lookup_resources(ty, perm, s, cursor.as_deref(), 1).await.expect("lookup resources");
        assert!(ids.len() <= 1);
        out.extend(ids.iter().cloned());
        if !more {
            break;
        }
        cursor = ids.last().cloned();
    }
    let unique: BTreeSet<_> = out.iter().collect();
    assert_eq!(unique.len(), out.len(), "duplicates in {out:?}");
    out
}

#[tokio::test]
async fn testdata_files() {
    let dir = root().join("testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    for f in files {
        run_case(&f).await;
    }
}
