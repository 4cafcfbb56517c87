//! Explanations (spec "Evaluation", Check `with_trace`; AccessAudit paths; rule 21): the tree of
//! relations, arrows and operators behind one check, the shortest satisfying path as text, and,
//! for `no`, the first excluding or missing branch.
//!
//! The explainer walks the schema expression of the checked permission itself and asks the
//! request's [`Evaluator`] for the answer of every name it meets, so the evaluator needs no
//! tracing hooks (nothing is paid when no trace is asked for) and an explanation never disagrees
//! with Check: the root's result *is* `Evaluator::check`, and every composite node is computed
//! from the evaluator's answers for its names. The tree is bounded ([`MAX_NODES`]); a sub-problem
//! explained once is shown again as `cached` without children.

use std::collections::HashSet;
use std::time::Instant;

use futures::future::BoxFuture;

use crate::eval::{EvalError, Evaluator, ObjectRef, SubjectRef, Tuple, TupleReader};
use crate::schema::{Expr, Schema};

/// Most nodes in one trace; deeper branches are cut (shown without children).
pub const MAX_NODES: usize = 500;

/// What a trace node stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Permission,
    Relation,
    Arrow,
    Union,
    Intersection,
    Exclusion,
    SubjectSet,
    Wildcard,
    Direct,
}

/// One node of an explanation tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub resource: ObjectRef,
    pub name: String,
    pub kind: Kind,
    pub result: bool,
    /// Explained earlier in the same trace (children omitted).
    pub cached: bool,
    pub duration_us: u64,
    /// The relationship this node follows (direct, wildcard, subject-set and arrow nodes).
    pub relationship: Option<Tuple>,
    pub children: Vec<Node>,
}

impl Node {
    fn new(resource: &ObjectRef, name: impl Into<String>, kind: Kind) -> Self {
        Node {
            resource: resource.clone(),
            name: name.into(),
            kind,
            result: false,
            cached: false,
            duration_us: 0,
            relationship: None,
            children: Vec::new(),
        }
    }
}

/// A check with its explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explained {
    pub has: bool,
    pub tree: Node,
    /// For `has`, the shortest satisfying path; for `no`, the first excluding or missing branch.
    pub explanation: Vec<String>,
}

/// Explains `subject` holding `permission` on `resource` with the request's evaluator.
pub async fn explain<R: TupleReader>(
    ev: &mut Evaluator<'_, R>,
    schema: &Schema,
    resource: &ObjectRef,
    permission: &str,
    subject: &SubjectRef,
) -> Result<Explained, EvalError> {
    let has = ev.check(resource, permission, subject).await?;
    let mut walker = Walker { ev, schema, subject: subject.clone(), seen: HashSet::new(), nodes: 0 };
    let mut tree = walker.name(resource.clone(), permission.to_owned()).await?;
    tree.result = has;
    let explanation = if has {
        let path = shortest(&tree).unwrap_or_default();
        vec![render(&path, subject)]
    } else {
        vec![why_not(&tree, subject)]
    };
    Ok(Explained { has, tree, explanation })
}

struct Walker<'a, 'e, R> {
    ev: &'a mut Evaluator<'e, R>,
    schema: &'a Schema,
    subject: SubjectRef,
    seen: HashSet<(ObjectRef, String)>,
    nodes: usize,
}

impl<R: TupleReader> Walker<'_, '_, R> {
    fn room(&mut self) -> bool {
        self.nodes += 1;
        self.nodes <= MAX_NODES
    }

    fn name(&mut self, obj: ObjectRef, name: String) -> BoxFuture<'_, Result<Node, EvalError>> {
        Box::pin(async move {
            let started = Instant::now();
            let is_relation = self.schema.relation(&obj.ty, &name).is_some();
            let kind = if is_relation { Kind::Relation } else { Kind::Permission };
            let mut node = Node::new(&obj, &name, kind);
            node.result = self.ev.check(&obj, &name, &self.subject).await?;
            if !self.seen.insert((obj.clone(), name.clone())) {
                node.cached = true;
                return Ok(node);
            }
            if !self.room() {
                return Ok(node);
            }
            if is_relation {
                let rows = self.ev.relationships(&obj, &name).await?;
                for t in rows.iter() {
                    let s = &t.subject;
                    let child = if *s == self.subject {
                        let mut n = Node::new(&obj, &name, Kind::Direct);
                        n.result = true;
                        n
                    } else if s.id == "*" && s.ty == self.subject.ty && self.subject.relation.is_empty() {
                        let mut n = Node::new(&obj, &name, Kind::Wildcard);
                        n.result = true;
                        n
                    } else if !s.relation.is_empty() && s.id != "*" {
                        let target = ObjectRef::new(&s.ty, &s.id);
                        let mut n = Node::new(&target, &s.relation, Kind::SubjectSet);
                        let inner = self.name(target, s.relation.clone()).await?;
                        n.result = inner.result;
                        n.children.push(inner);
                        n
                    } else {
                        continue;
                    };
                    let mut child = child;
                    child.relationship = Some(t.clone());
                    node.children.push(child);
                }
            } else if let Some(e) = self.schema.definition(&obj.ty).and_then(|d| d.permissions.get(&name)).cloned() {
                let child = self.expr(&obj, &e).await?;
                node.children.push(child);
            }
            node.duration_us = started.elapsed().as_micros() as u64;
            Ok(node)
        })
    }

    fn expr<'x>(&'x mut self, obj: &'x ObjectRef, e: &'x Expr) -> BoxFuture<'x, Result<Node, EvalError>> {
        Box::pin(async move {
            let started = Instant::now();
            let mut node = match e {
                Expr::Nil => Node::new(obj, "nil", Kind::Union),
                Expr::Name(n) => return self.name(obj.clone(), n.clone()).await,
                Expr::Arrow(rel, name) => {
                    let mut node = Node::new(obj, format!("{rel}->{name}"), Kind::Arrow);
                    let rows = self.ev.relationships(obj, rel).await?;
                    for t in rows.iter().filter(|t| t.subject.relation.is_empty() && t.subject.id != "*") {
                        let target = ObjectRef::new(&t.subject.ty, &t.subject.id);
                        if !self.schema.has(&target.ty, name) {
                            continue;
                        }
                        let mut inner = self.name(target, name.clone()).await?;
                        inner.relationship = Some(t.clone());
                        node.result |= inner.result;
                        node.children.push(inner);
                    }
                    node
                }
                Expr::Union(v) | Expr::Intersection(v) => {
                    let union = matches!(e, Expr::Union(_));
                    let mut node = Node::new(obj, "", if union { Kind::Union } else { Kind::Intersection });
                    node.result = !union;
                    for x in v {
                        let child = self.expr(obj, x).await?;
                        node.result = if union { node.result || child.result } else { node.result && child.result };
                        node.children.push(child);
                    }
                    node
                }
                Expr::Exclusion(l, r) => {
                    let mut node = Node::new(obj, "", Kind::Exclusion);
                    let left = self.expr(obj, l).await?;
                    let right = self.expr(obj, r).await?;
                    node.result = left.result && !right.result;
                    node.children = vec![left, right];
                    node
                }
            };
            node.duration_us = started.elapsed().as_micros() as u64;
            Ok(node)
        })
    }
}

/// The shortest chain of satisfied nodes from `n` down to a direct or wildcard relationship.
fn shortest(n: &Node) -> Option<Vec<&Node>> {
    if !n.result {
        return None;
    }
    let mut best: Option<Vec<&Node>> = match n.kind {
        Kind::Direct | Kind::Wildcard => return Some(vec![n]),
        // Only the left side of an exclusion grants; an intersection is shown through its first
        // side (every side holds).
        Kind::Exclusion => n.children.first().and_then(shortest),
        Kind::Intersection => n.children.first().and_then(shortest),
        _ => None,
    };
    if best.is_none() {
        for c in &n.children {
            if let Some(p) = shortest(c)
                && best.as_ref().is_none_or(|b| p.len() < b.len())
            {
                best = Some(p);
            }
        }
    }
    let mut path = best?;
    path.insert(0, n);
    Some(path)
}

/// Renders a root-to-leaf path as text from the subject up, e.g.
/// `user:pat ∈ team:platform#member ⊂ team:eng#member → test_document:spec#editor ⇒ edit`.
fn render(path: &[&Node], subject: &SubjectRef) -> String {
    let mut out = subject.to_string();
    for n in path.iter().rev() {
        match (n.kind, &n.relationship) {
            (Kind::Direct, Some(t)) => out.push_str(&format!(" ∈ {}#{}", t.resource, t.relation)),
            (Kind::Wildcard, Some(t)) => {
                out.push_str(&format!(" ∈ {}:* → {}#{}", t.subject.ty, t.resource, t.relation))
            }
            (Kind::SubjectSet, Some(t)) => {
                let op = if t.resource.ty == t.subject.ty { "⊂" } else { "→" };
                out.push_str(&format!(" {op} {}#{}", t.resource, t.relation));
            }
            (Kind::Permission, Some(t)) => {
                // A permission reached through an arrow: the arrow's relationship.
                out.push_str(&format!(" ⇒ {} → {}#{}->{}", n.name, t.resource, t.relation, n.name));
            }
            (Kind::Permission, None) => out.push_str(&format!(" ⇒ {}", n.name)),
            (Kind::Relation, Some(t)) => out.push_str(&format!(" → {}#{}->{}", t.resource, t.relation, n.name)),
            _ => {}
        }
    }
    out
}

/// The relationships (and arrows) of a satisfying path, from the resource down to the subject:
/// `test_document:spec#editor@team:eng#member`, `team:eng#member@user:bob`; an arrow shows as
/// `org->administer` followed by the relationships on the org.
pub fn grant_path(tree: &Node) -> Vec<String> {
    let Some(path) = shortest(tree) else { return Vec::new() };
    let mut out = Vec::new();
    for n in path {
        match (n.kind, &n.relationship) {
            (Kind::Direct | Kind::Wildcard | Kind::SubjectSet, Some(t)) => out.push(t.to_string()),
            (Kind::Permission | Kind::Relation, Some(t)) => out.push(format!("{}->{}", t.relation, n.name)),
            _ => {}
        }
    }
    out
}

/// For a `no`: the first exclusion that removed the subject, else the first intersection side
/// that is missing, else the relations and arrows that were checked.
fn why_not(tree: &Node, subject: &SubjectRef) -> String {
    if let Some((excluded_by, what)) = first_exclusion(tree) {
        let path = shortest(excluded_by).map(|p| render(&p, subject)).unwrap_or_default();
        return format!("{what}: excluded because {path}");
    }
    if let Some(missing) = first_missing_intersection(tree) {
        return format!("{} on {}: missing `{}`", tree.name, tree.resource, missing);
    }
    let mut checked = Vec::new();
    leaves(tree, &mut checked);
    format!("{subject} holds none of {} on {}", checked.join(", "), tree.resource)
}

fn first_exclusion(n: &Node) -> Option<(&Node, String)> {
    if n.kind == Kind::Exclusion && n.children.len() == 2 && n.children[0].result && n.children[1].result {
        return Some((&n.children[1], format!("{} {}", n.resource, label(&n.children[0]))));
    }
    n.children.iter().find_map(first_exclusion)
}

fn first_missing_intersection(n: &Node) -> Option<String> {
    if n.kind == Kind::Intersection && !n.result {
        return n.children.iter().find(|c| !c.result).map(label);
    }
    n.children.iter().find_map(first_missing_intersection)
}

fn label(n: &Node) -> String {
    match n.kind {
        Kind::Union | Kind::Intersection | Kind::Exclusion => {
            let parts: Vec<String> = n.children.iter().map(label).collect();
            let op = match n.kind {
                Kind::Union => " + ",
                Kind::Intersection => " & ",
                _ => " - ",
            };
            format!("({})", parts.join(op))
        }
        _ => n.name.clone(),
    }
}

fn leaves(n: &Node, out: &mut Vec<String>) {
    match n.kind {
        Kind::Relation | Kind::Arrow => {
            if !out.contains(&n.name) {
                out.push(n.name.clone());
            }
        }
        _ => n.children.iter().for_each(|c| leaves(c, out)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::MemoryStore;
    use crate::schema::{ModuleSource, compile};

    const ACCEPTANCE: &str = include_str!("../testdata/acceptance.yaml");

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    /// The spec's correctness data, and every object id and relationship read from the YAML.
    fn data() -> (Schema, MemoryStore) {
        let yaml: serde_json::Value = serde_yaml_ng::from_str(ACCEPTANCE).expect("yaml");
        let module = yaml["modules"]["acceptance"].as_str().expect("module").to_owned();
        let schema = compile(&[
            ModuleSource { module: "identity", source: include_str!("../../identity/schema.zed") },
            ModuleSource { module: "permissions", source: crate::SCHEMA },
            ModuleSource { module: "acceptance", source: &module },
        ])
        .expect("schema");
        let tuples = yaml["relationships"]
            .as_str()
            .expect("relationships")
            .lines()
            .filter_map(|l| Tuple::parse(l.split_whitespace().next()?))
            .collect::<Vec<_>>();
        (schema, MemoryStore::new(tuples))
    }

    fn why(schema: &Schema, store: &MemoryStore, check: &str) -> Explained {
        let t = Tuple::parse(check).expect("check");
        let mut ev = Evaluator::new(schema, store.clone(), 50);
        block_on(explain(&mut ev, schema, &t.resource, &t.relation, &t.subject)).expect("explain")
    }

    #[test]
    fn a_yes_is_explained_by_its_shortest_path() {
        let (schema, store) = data();
        let pat = why(&schema, &store, "test_document:spec#edit@user:pat");
        assert!(pat.has);
        assert_eq!(
            pat.explanation,
            vec!["user:pat ∈ team:platform#member ⊂ team:eng#member → test_document:spec#editor ⇒ edit"]
        );
        assert_eq!(
            grant_path(&pat.tree),
            vec![
                "test_document:spec#editor@team:eng#member",
                "team:eng#member@team:platform#member",
                "team:platform#member@user:pat"
            ]
        );
        let carol = why(&schema, &store, "test_document:spec#edit@user:carol");
        assert_eq!(
            carol.explanation,
            vec!["user:carol ∈ organization:acme#admin ⇒ administer → test_document:spec#org->administer ⇒ edit"]
        );
        assert_eq!(grant_path(&carol.tree), vec!["org->administer", "organization:acme#admin@user:carol"]);
        let frank = why(&schema, &store, "test_document:public#view@user:frank");
        assert_eq!(grant_path(&frank.tree), vec!["test_document:public#viewer@user:*"]);
    }

    #[test]
    fn a_no_names_the_excluding_or_missing_branch() {
        let (schema, store) = data();
        let pat = why(&schema, &store, "test_document:spec#view@user:pat");
        assert!(!pat.has);
        assert!(
            pat.explanation[0].contains("excluded because user:pat ∈ test_document:spec#banned"),
            "{:?}",
            pat.explanation
        );
        let vera = why(&schema, &store, "test_document:spec#approve@user:vera");
        assert!(!vera.has);
        assert!(vera.explanation[0].contains("missing `org->contribute`"), "{:?}", vera.explanation);
        let gina = why(&schema, &store, "test_document:spec#edit@user:gina");
        assert!(
            gina.explanation[0].starts_with("user:gina holds none of owner, editor, org->administer"),
            "{:?}",
            gina.explanation
        );
    }

    #[test]
    fn every_node_agrees_with_check() {
        // Rule 21: the explanation never disagrees with the evaluator, at any node.
        let (schema, store) = data();
        fn walk(n: &Node, out: &mut Vec<(ObjectRef, String, bool)>) {
            if matches!(n.kind, Kind::Permission | Kind::Relation) {
                out.push((n.resource.clone(), n.name.clone(), n.result));
            }
            n.children.iter().for_each(|c| walk(c, out));
        }
        for check in [
            "test_document:spec#view@user:bob",
            "test_document:handbook#view@user:vera",
            "team:platform#manage@user:max",
        ] {
            let e = why(&schema, &store, check);
            let subject = Tuple::parse(check).expect("check").subject;
            let mut nodes = Vec::new();
            walk(&e.tree, &mut nodes);
            assert!(nodes.len() > 2, "{check}");
            for (obj, name, result) in nodes {
                let mut ev = Evaluator::new(&schema, store.clone(), 50);
                assert_eq!(block_on(ev.check(&obj, &name, &subject)), Ok(result), "{check}: {obj}#{name}");
            }
        }
    }
}
