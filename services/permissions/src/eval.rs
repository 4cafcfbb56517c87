//! The evaluator: Check, Expand, LookupResources and LookupSubjects over one snapshot of
//! relationships (spec "Evaluation", rules 7–11).
//!
//! - Each request owns an [`Evaluator`]: a per-request memo of sub-problems, a per-request cache
//!   of the relationship rows it has read, and the current evaluation path (for cycles).
//! - Reads are batched: before following the subject sets or arrow targets of one relation, the
//!   rows of all those objects are fetched with one [`TupleReader::read`] call per
//!   `(type, relation)`, not one per edge.
//! - Cycles in the data terminate: a sub-problem already on the path contributes `no` to that
//!   branch (the least fixed point). Results that depended on such a cut are memoised only once
//!   the cycle's root finishes, so the memo never changes an answer.
//! - Every subject-set hop and arrow hop adds one to the depth; past `max_depth` the answer is
//!   [`EvalError::MaxDepth`] unless another branch decides it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::schema::{AllowedSubject, Expr, Schema};

/// The default and largest depth (rule 10).
pub const DEFAULT_MAX_DEPTH: u32 = 50;
pub const MAX_MAX_DEPTH: u32 = 100;

/// An object `type:id`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectRef {
    pub ty: String,
    pub id: String,
}

impl ObjectRef {
    pub fn new(ty: impl Into<String>, id: impl Into<String>) -> Self {
        Self { ty: ty.into(), id: id.into() }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ty, self.id)
    }
}

/// A subject `type:id` or subject set `type:id#relation` (`relation` empty for none).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SubjectRef {
    pub ty: String,
    pub id: String,
    #[serde(default)]
    pub relation: String,
}

impl SubjectRef {
    pub fn new(ty: impl Into<String>, id: impl Into<String>) -> Self {
        Self { ty: ty.into(), id: id.into(), relation: String::new() }
    }
    pub fn set(ty: impl Into<String>, id: impl Into<String>, relation: impl Into<String>) -> Self {
        Self { ty: ty.into(), id: id.into(), relation: relation.into() }
    }
}

impl fmt::Display for SubjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ty, self.id)?;
        if !self.relation.is_empty() {
            write!(f, "#{}", self.relation)?;
        }
        Ok(())
    }
}

/// A stored relationship `resource#relation@subject`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Tuple {
    pub resource: ObjectRef,
    pub relation: String,
    pub subject: SubjectRef,
}

impl Tuple {
    /// Parses `type:id#relation@type:id[#relation]`.
    pub fn parse(s: &str) -> Option<Tuple> {
        let (res, sub) = s.split_once('@')?;
        let (res, relation) = res.split_once('#')?;
        let (rt, rid) = res.split_once(':')?;
        let (sub, srel) = match sub.split_once('#') {
            Some((a, b)) => (a, b),
            None => (sub, ""),
        };
        let (st, sid) = sub.split_once(':')?;
        Some(Tuple {
            resource: ObjectRef::new(rt, rid),
            relation: relation.into(),
            subject: SubjectRef::set(st, sid, srel),
        })
    }
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}@{}", self.resource, self.relation, self.subject)
    }
}

/// Why an evaluation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvalError {
    /// The type or permission is not in the schema.
    UnknownPermission { ty: String, name: String },
    /// The answer depends on a branch deeper than the limit.
    MaxDepth { depth: u32 },
    /// The relationship store failed.
    Store(String),
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvalError::UnknownPermission { ty, name } => write!(f, "`{ty}` has no relation or permission `{name}`"),
            EvalError::MaxDepth { depth } => write!(f, "maximum depth {depth} exceeded"),
            EvalError::Store(e) => write!(f, "relationship store: {e}"),
        }
    }
}

impl std::error::Error for EvalError {}

/// Where the evaluator reads relationships from (one snapshot).
pub trait TupleReader: Send {
    /// The relationships `ty:id#relation@…` for every id of `ids`.
    fn read(
        &mut self,
        ty: &str,
        ids: &[String],
        relation: &str,
    ) -> impl Future<Output = Result<Vec<Tuple>, EvalError>> + Send;

    /// The relationships `ty:id#relation@…` for every id of `ids` and relation of `relations` (one
    /// round trip for all the relations a permission reads on its objects).
    fn read_many(
        &mut self,
        ty: &str,
        ids: &[String],
        relations: &[String],
    ) -> impl Future<Output = Result<Vec<Tuple>, EvalError>> + Send;

    /// The relationships whose subject object is `ty:id` (any subject relation) for every id of
    /// `ids`; `*` in `ids` reads wildcard rows.
    fn read_by_subject(
        &mut self,
        ty: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Tuple>, EvalError>> + Send;

    /// The resource ids of the relationships `ty:…#relation@subject_type:id[#subject_relation]`
    /// for every id of `subject_ids` (the reverse walk of LookupResources).
    fn read_reverse(
        &mut self,
        ty: &str,
        relation: &str,
        subject_type: &str,
        subject_ids: &[String],
        subject_relation: &str,
    ) -> impl Future<Output = Result<Vec<String>, EvalError>> + Send;
}

impl<R: TupleReader> TupleReader for &mut R {
    fn read(
        &mut self,
        ty: &str,
        ids: &[String],
        relation: &str,
    ) -> impl Future<Output = Result<Vec<Tuple>, EvalError>> + Send {
        (**self).read(ty, ids, relation)
    }

    fn read_many(
        &mut self,
        ty: &str,
        ids: &[String],
        relations: &[String],
    ) -> impl Future<Output = Result<Vec<Tuple>, EvalError>> + Send {
        (**self).read_many(ty, ids, relations)
    }

    fn read_by_subject(
        &mut self,
        ty: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Tuple>, EvalError>> + Send {
        (**self).read_by_subject(ty, ids)
    }

    fn read_reverse(
        &mut self,
        ty: &str,
        relation: &str,
        subject_type: &str,
        subject_ids: &[String],
        subject_relation: &str,
    ) -> impl Future<Output = Result<Vec<String>, EvalError>> + Send {
        (**self).read_reverse(ty, relation, subject_type, subject_ids, subject_relation)
    }
}

/// An in-memory relationship set (tests, the reference evaluator, validation files).
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    pub tuples: BTreeSet<Tuple>,
    /// How many `read*` calls were made (to assert batching).
    pub reads: usize,
}

impl MemoryStore {
    pub fn new(tuples: impl IntoIterator<Item = Tuple>) -> Self {
        Self { tuples: tuples.into_iter().collect(), reads: 0 }
    }
}

impl TupleReader for MemoryStore {
    async fn read(&mut self, ty: &str, ids: &[String], relation: &str) -> Result<Vec<Tuple>, EvalError> {
        self.reads += 1;
        let ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
        Ok(self
            .tuples
            .iter()
            .filter(|t| t.resource.ty == ty && t.relation == relation && ids.contains(t.resource.id.as_str()))
            .cloned()
            .collect())
    }

    async fn read_many(&mut self, ty: &str, ids: &[String], relations: &[String]) -> Result<Vec<Tuple>, EvalError> {
        self.reads += 1;
        let ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
        Ok(self
            .tuples
            .iter()
            .filter(|t| t.resource.ty == ty && relations.contains(&t.relation) && ids.contains(t.resource.id.as_str()))
            .cloned()
            .collect())
    }

    async fn read_by_subject(&mut self, ty: &str, ids: &[String]) -> Result<Vec<Tuple>, EvalError> {
        self.reads += 1;
        let ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
        Ok(self.tuples.iter().filter(|t| t.subject.ty == ty && ids.contains(t.subject.id.as_str())).cloned().collect())
    }

    async fn read_reverse(
        &mut self,
        ty: &str,
        relation: &str,
        subject_type: &str,
        subject_ids: &[String],
        subject_relation: &str,
    ) -> Result<Vec<String>, EvalError> {
        self.reads += 1;
        let ids: HashSet<&str> = subject_ids.iter().map(String::as_str).collect();
        Ok(self
            .tuples
            .iter()
            .filter(|t| {
                t.resource.ty == ty
                    && t.relation == relation
                    && t.subject.ty == subject_type
                    && t.subject.relation == subject_relation
                    && ids.contains(t.subject.id.as_str())
            })
            .map(|t| t.resource.id.clone())
            .collect())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tri {
    Has,
    No,
    /// Undecided because a branch exceeded the depth limit.
    Deep,
}

/// An intermediate result: the answer, the lowest path index of a cycle cut it depended on, and
/// the hops below the sub-problem that decided it (so that a memoised answer is reused only where
/// the remaining depth would have reached the same answer).
#[derive(Clone, Copy, Debug)]
struct Res {
    v: Tri,
    cut: Option<usize>,
    span: u32,
}

impl Res {
    fn of(v: Tri) -> Self {
        Res { v, cut: None, span: 0 }
    }
    fn merge_cut(&mut self, other: &Res) {
        self.cut = match (self.cut, other.cut) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

type Key = (ObjectRef, String, SubjectRef);

/// One request's evaluator over one snapshot.
#[derive(Debug)]
pub struct Evaluator<'s, R> {
    schema: &'s Schema,
    reader: R,
    max_depth: u32,
    rows: HashMap<(String, String, String), Arc<Vec<Tuple>>>,
    memo: HashMap<Key, (bool, u32)>,
    /// The relations each `(type, permission)` reads on its own object (schema-derived).
    locals: HashMap<(String, String), Arc<[String]>>,
    path: Vec<Key>,
    subject: SubjectRef,
    ignore_wildcards: bool,
}

impl<'s, R: TupleReader> Evaluator<'s, R> {
    pub fn new(schema: &'s Schema, reader: R, max_depth: u32) -> Self {
        Self {
            schema,
            reader,
            max_depth: max_depth.clamp(1, MAX_MAX_DEPTH),
            rows: HashMap::new(),
            memo: HashMap::new(),
            locals: HashMap::new(),
            path: Vec::new(),
            subject: SubjectRef::new("", ""),
            ignore_wildcards: false,
        }
    }

    /// The reader (to inspect it after evaluation).
    pub fn reader(&self) -> &R {
        &self.reader
    }

    /// Every `(type, id, relation)` this evaluator has read so far: what its answers depend on
    /// (the result cache voids an answer when one of them changes).
    pub fn read_keys(&self) -> Vec<(String, String, String)> {
        self.rows.keys().cloned().collect()
    }

    /// The stored relationships `obj#relation@…` of this evaluator's snapshot (read once per
    /// request, like every read of the evaluator). Used by explanations.
    pub async fn relationships(&mut self, obj: &ObjectRef, relation: &str) -> Result<Arc<Vec<Tuple>>, EvalError> {
        self.rows_of(obj, relation).await
    }

    fn validate(&self, ty: &str, name: &str) -> Result<(), EvalError> {
        if self.schema.has(ty, name) {
            Ok(())
        } else {
            Err(EvalError::UnknownPermission { ty: ty.into(), name: name.into() })
        }
    }

    /// Whether `subject` holds `permission` (or relation) on `resource`.
    pub async fn check(
        &mut self,
        resource: &ObjectRef,
        permission: &str,
        subject: &SubjectRef,
    ) -> Result<bool, EvalError> {
        self.validate(&resource.ty, permission)?;
        self.subject = subject.clone();
        let r = self.node(resource.clone(), permission.to_owned(), 0).await?;
        match r.v {
            Tri::Has => Ok(true),
            Tri::No => Ok(false),
            Tri::Deep => Err(EvalError::MaxDepth { depth: self.max_depth }),
        }
    }

    /// Many checks at one snapshot, sharing this evaluator's memo and row cache; each item gets
    /// its own result.
    pub async fn check_bulk(&mut self, items: &[(ObjectRef, String, SubjectRef)]) -> Vec<Result<bool, EvalError>> {
        let mut out = Vec::with_capacity(items.len());
        for (r, p, s) in items {
            out.push(self.check(r, p, s).await);
        }
        out
    }

    async fn load(&mut self, ty: &str, ids: &[String], relation: &str) -> Result<(), EvalError> {
        self.load_many(ty, ids, std::slice::from_ref(&relation.to_owned())).await
    }

    /// Loads the rows of every `(id, relation)` not loaded yet, in one read.
    async fn load_many(&mut self, ty: &str, ids: &[String], relations: &[String]) -> Result<(), EvalError> {
        let mut want_ids: Vec<String> = Vec::new();
        let mut want_rels: BTreeSet<&String> = BTreeSet::new();
        let mut seen = HashSet::new();
        let mut key = (ty.to_owned(), String::new(), String::new());
        for id in ids {
            if !seen.insert(id) {
                continue;
            }
            key.1.clone_from(id);
            let mut missing = false;
            for rel in relations {
                key.2.clone_from(rel);
                if !self.rows.contains_key(&key) {
                    missing = true;
                    want_rels.insert(rel);
                }
            }
            if missing {
                want_ids.push(id.clone());
            }
        }
        if want_ids.is_empty() {
            return Ok(());
        }
        let want_rels: Vec<String> = want_rels.into_iter().cloned().collect();
        let rows = if let [rel] = want_rels.as_slice() {
            self.reader.read(ty, &want_ids, rel).await?
        } else {
            self.reader.read_many(ty, &want_ids, &want_rels).await?
        };
        let mut by_key: HashMap<(String, String), Vec<Tuple>> = HashMap::new();
        for t in rows {
            by_key.entry((t.resource.id.clone(), t.relation.clone())).or_default().push(t);
        }
        for id in &want_ids {
            for rel in &want_rels {
                let v = by_key.remove(&(id.clone(), rel.clone())).unwrap_or_default();
                self.rows.entry((ty.to_owned(), id.clone(), rel.clone())).or_insert_with(|| Arc::new(v));
            }
        }
        Ok(())
    }

    /// The relations `name` on `ty` reads on its own object, memoised per evaluator.
    fn locals(&mut self, ty: &str, name: &str) -> Arc<[String]> {
        if let Some(v) = self.locals.get(&(ty.to_owned(), name.to_owned())) {
            return v.clone();
        }
        let v: Arc<[String]> = self.local_relations(ty, name).into_iter().collect();
        self.locals.insert((ty.to_owned(), name.to_owned()), v.clone());
        v
    }

    async fn rows_of(&mut self, obj: &ObjectRef, relation: &str) -> Result<Arc<Vec<Tuple>>, EvalError> {
        let key = (obj.ty.clone(), obj.id.clone(), relation.to_owned());
        if let Some(r) = self.rows.get(&key) {
            return Ok(r.clone());
        }
        self.load(&obj.ty, std::slice::from_ref(&obj.id), relation).await?;
        Ok(self.rows.get(&key).cloned().unwrap_or_default())
    }

    /// Prefetches, on many objects, the relations `name` reads on each of them: `name` itself when
    /// it is a relation, every relation its expression reads on the object when it is a permission
    /// (one read per type).
    async fn prefetch(&mut self, objs: &[ObjectRef], name: &str) -> Result<(), EvalError> {
        let mut by_type: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for o in objs {
            by_type.entry(&o.ty).or_default().push(o.id.clone());
        }
        for (ty, ids) in by_type {
            let rels = self.locals(ty, name);
            if !rels.is_empty() {
                self.load_many(ty, &ids, &rels).await?;
            }
        }
        Ok(())
    }

    fn node(&mut self, obj: ObjectRef, name: String, depth: u32) -> BoxFuture<'_, Result<Res, EvalError>> {
        Box::pin(async move {
            let key: Key = (obj, name, self.subject.clone());
            if let Some((v, span)) = self.memo.get(&key)
                && depth + span <= self.max_depth
            {
                return Ok(Res { v: if *v { Tri::Has } else { Tri::No }, cut: None, span: *span });
            }
            if let Some(i) = self.path.iter().position(|k| *k == key) {
                return Ok(Res { v: Tri::No, cut: Some(i), span: 0 });
            }
            let index = self.path.len();
            self.path.push(key.clone());
            let out = self.compute(&key.0, &key.1, depth).await;
            self.path.pop();
            let mut r = out?;
            if r.cut.is_some_and(|c| c >= index) {
                r.cut = None;
            }
            if r.cut.is_none() && r.v != Tri::Deep {
                self.memo.insert(key, (r.v == Tri::Has, r.span));
            }
            Ok(r)
        })
    }

    async fn compute(&mut self, obj: &ObjectRef, name: &str, depth: u32) -> Result<Res, EvalError> {
        let Some(def) = self.schema.definition(&obj.ty) else { return Ok(Res::of(Tri::No)) };
        if def.relations.contains_key(name) {
            return self.relation(obj, name, depth).await;
        }
        match def.permissions.get(name) {
            Some(e) => {
                let e = e.clone();
                // Every relation the permission reads on this object, in one round trip.
                let rels = self.locals(&obj.ty, name);
                if rels.len() > 1 {
                    self.load_many(&obj.ty, std::slice::from_ref(&obj.id), &rels).await?;
                }
                self.expr(obj, &e, depth).await
            }
            None => Ok(Res::of(Tri::No)),
        }
    }

    async fn relation(&mut self, obj: &ObjectRef, name: &str, depth: u32) -> Result<Res, EvalError> {
        let rows = self.rows_of(obj, name).await?;
        let s = &self.subject;
        let mut sets = Vec::new();
        for t in rows.iter() {
            if t.subject == *s {
                return Ok(Res::of(Tri::Has));
            }
            if t.subject.id == "*" && t.subject.ty == s.ty && s.relation.is_empty() && !self.ignore_wildcards {
                return Ok(Res::of(Tri::Has));
            }
            if !t.subject.relation.is_empty() && t.subject.id != "*" {
                sets.push(t.subject.clone());
            }
        }
        if sets.is_empty() {
            return Ok(Res::of(Tri::No));
        }
        if depth + 1 > self.max_depth {
            return Ok(Res::of(Tri::Deep));
        }
        // Fetch the rows of every subject set in bulk, one read per (type, relation).
        let mut groups: BTreeMap<String, Vec<ObjectRef>> = BTreeMap::new();
        for set in &sets {
            groups.entry(set.relation.clone()).or_default().push(ObjectRef::new(&set.ty, &set.id));
        }
        for (rel, objs) in &groups {
            self.prefetch(objs, rel).await?;
        }
        self.any(sets.into_iter().map(|s| (ObjectRef::new(s.ty, s.id), s.relation)).collect(), depth + 1).await
    }

    /// Union over sub-problems one hop down, at `depth`.
    async fn any(&mut self, items: Vec<(ObjectRef, String)>, depth: u32) -> Result<Res, EvalError> {
        let mut acc = Res::of(Tri::No);
        for (o, n) in items {
            let mut r = self.node(o, n, depth).await?;
            r.span += 1;
            if union_step(&mut acc, r) {
                return Ok(acc);
            }
        }
        Ok(acc)
    }

    fn expr<'a>(&'a mut self, obj: &'a ObjectRef, e: &'a Expr, depth: u32) -> BoxFuture<'a, Result<Res, EvalError>> {
        Box::pin(async move {
            match e {
                Expr::Nil => Ok(Res::of(Tri::No)),
                Expr::Name(n) => self.node(obj.clone(), n.clone(), depth).await,
                Expr::Arrow(rel, name) => {
                    let rows = self.rows_of(obj, rel).await?;
                    let targets: Vec<ObjectRef> = rows
                        .iter()
                        .filter(|t| t.subject.relation.is_empty() && t.subject.id != "*")
                        .map(|t| ObjectRef::new(&t.subject.ty, &t.subject.id))
                        .collect();
                    if targets.is_empty() {
                        return Ok(Res::of(Tri::No));
                    }
                    if depth + 1 > self.max_depth {
                        return Ok(Res::of(Tri::Deep));
                    }
                    self.prefetch(&targets, name).await?;
                    self.any(targets.into_iter().map(|o| (o, name.clone())).collect(), depth + 1).await
                }
                Expr::Union(v) => {
                    let mut acc = Res::of(Tri::No);
                    for x in v {
                        let r = self.expr(obj, x, depth).await?;
                        if union_step(&mut acc, r) {
                            return Ok(acc);
                        }
                    }
                    Ok(acc)
                }
                Expr::Intersection(v) => {
                    let mut acc = Res::of(Tri::Has);
                    for x in v {
                        let r = self.expr(obj, x, depth).await?;
                        acc.merge_cut(&r);
                        match r.v {
                            Tri::No => {
                                acc.v = Tri::No;
                                acc.span = r.span;
                                return Ok(acc);
                            }
                            Tri::Deep => acc.v = Tri::Deep,
                            Tri::Has => acc.span = acc.span.max(r.span),
                        }
                    }
                    Ok(acc)
                }
                Expr::Exclusion(l, r) => {
                    let mut acc = self.expr(obj, l, depth).await?;
                    if acc.v == Tri::No {
                        return Ok(acc);
                    }
                    let right = self.expr(obj, r, depth).await?;
                    acc.merge_cut(&right);
                    (acc.v, acc.span) = match (acc.v, right.v) {
                        (_, Tri::Has) => (Tri::No, right.span),
                        (Tri::Has, Tri::No) => (Tri::Has, acc.span.max(right.span)),
                        _ => (Tri::Deep, 0),
                    };
                    Ok(acc)
                }
            }
        })
    }

    /// The relation names (not permissions) that `name` on `ty` reads on the object itself.
    fn local_relations(&self, ty: &str, name: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let Some(def) = self.schema.definition(ty) else { return out };
        let mut stack = vec![name.to_owned()];
        let mut seen = BTreeSet::new();
        while let Some(n) = stack.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            if def.relations.contains_key(&n) {
                out.insert(n);
            } else if let Some(e) = def.permissions.get(&n) {
                collect_names(e, &mut |x, arrow| {
                    if arrow {
                        out.insert(x.to_owned());
                    } else {
                        stack.push(x.to_owned());
                    }
                });
            }
        }
        out
    }

    /// The org-wide shortcut of LookupResources (rule 19): whether `permission` on `ty` is a union
    /// (or a single term) with a top-level term `rel->x`, where `rel` allows only `organization`,
    /// and `subject` holds `x` on `org_object`. Every object of the type then qualifies, because
    /// the owning service relates each of its objects to its org.
    pub async fn org_wide(
        &mut self,
        ty: &str,
        permission: &str,
        subject: &SubjectRef,
        org_object: &ObjectRef,
    ) -> Result<bool, EvalError> {
        self.validate(ty, permission)?;
        let Some(e) = self.schema.definition(ty).and_then(|d| d.permissions.get(permission)).cloned() else {
            return Ok(false);
        };
        let terms = match &e {
            Expr::Union(v) => v.clone(),
            other => vec![other.clone()],
        };
        for term in terms {
            let Expr::Arrow(rel, x) = term else { continue };
            let only_org = self
                .schema
                .relation(ty, &rel)
                .is_some_and(|allowed| allowed.iter().all(|a| *a == AllowedSubject::Direct(org_object.ty.clone())));
            if only_org && self.check(org_object, &x, subject).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Resources of `ty` on which `subject` holds `permission`, in id order after `cursor`, at most
    /// `limit`. Returns the ids and whether more may follow (then continue from the last id).
    ///
    /// The reverse walk ([`reverse`]) computes the whole set from the subject outward; where it
    /// would not be exact, candidates are checked one by one.
    pub async fn lookup_resources(
        &mut self,
        ty: &str,
        permission: &str,
        subject: &SubjectRef,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool), EvalError> {
        self.validate(ty, permission)?;
        let Some(found) = self.reverse_walk(ty, permission, subject).await? else {
            return self.lookup_by_candidates(ty, permission, subject, cursor, limit).await;
        };
        let mut ids: Vec<String> = found.into_iter().filter(|id| cursor.is_none_or(|c| id.as_str() > c)).collect();
        ids.sort_unstable();
        let more = ids.len() > limit;
        ids.truncate(limit);
        Ok((ids, more))
    }

    /// LookupResources by checking every object from which the subject is reachable through stored
    /// rows (the fallback of the reverse walk).
    async fn lookup_by_candidates(
        &mut self,
        ty: &str,
        permission: &str,
        subject: &SubjectRef,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool), EvalError> {
        // Candidates: every object from which the subject is reachable through stored rows.
        let mut seen: HashSet<ObjectRef> = HashSet::new();
        let mut frontier: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut start = vec![subject.id.clone()];
        if subject.relation.is_empty() {
            start.push("*".into());
        }
        frontier.insert(subject.ty.clone(), start);
        while !frontier.is_empty() {
            let mut next: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (sty, ids) in std::mem::take(&mut frontier) {
                for t in self.reader.read_by_subject(&sty, &ids).await? {
                    if seen.insert(t.resource.clone()) {
                        next.entry(t.resource.ty.clone()).or_default().push(t.resource.id.clone());
                    }
                }
            }
            frontier = next;
        }
        let mut candidates: Vec<String> =
            seen.into_iter().filter(|o| o.ty == ty && cursor.is_none_or(|c| o.id.as_str() > c)).map(|o| o.id).collect();
        candidates.sort();
        let relations = self.local_relations(ty, permission);
        let mut out = Vec::new();
        for chunk in candidates.chunks(500) {
            for rel in &relations {
                self.load(ty, chunk, rel).await?;
            }
            for id in chunk {
                if self.check(&ObjectRef::new(ty, id.clone()), permission, subject).await? {
                    if out.len() == limit {
                        return Ok((out, true));
                    }
                    out.push(id.clone());
                }
            }
        }
        Ok((out, false))
    }

    /// Subjects of `subject_type` (with `subject_relation`, empty for plain subjects) that hold
    /// `permission` on `resource`, in id order. A wildcard comes first as `*` with the ids it
    /// excludes.
    pub async fn lookup_subjects(
        &mut self,
        resource: &ObjectRef,
        permission: &str,
        subject_type: &str,
        subject_relation: &str,
    ) -> Result<Vec<FoundSubject>, EvalError> {
        self.validate(&resource.ty, permission)?;
        // Candidates: every subject reachable from the resource through stored rows.
        let mut seen: HashSet<ObjectRef> = HashSet::from([resource.clone()]);
        let mut frontier = vec![resource.clone()];
        let mut ids: BTreeSet<String> = BTreeSet::new();
        let mut wildcard = false;
        while !frontier.is_empty() {
            let mut next = Vec::new();
            let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for o in frontier {
                by_type.entry(o.ty).or_default().push(o.id);
            }
            for (ty, oids) in by_type {
                let rels: Vec<String> =
                    self.schema.definition(&ty).map(|d| d.relations.keys().cloned().collect()).unwrap_or_default();
                for rel in rels {
                    self.load(&ty, &oids, &rel).await?;
                    for id in &oids {
                        let rows = self.rows.get(&(ty.clone(), id.clone(), rel.clone())).cloned().unwrap_or_default();
                        for t in rows.iter() {
                            let s = &t.subject;
                            if s.ty == subject_type && s.relation == subject_relation {
                                if s.id == "*" {
                                    wildcard = true;
                                } else {
                                    ids.insert(s.id.clone());
                                }
                            }
                            if s.id != "*" {
                                let o = ObjectRef::new(&s.ty, &s.id);
                                if seen.insert(o.clone()) {
                                    next.push(o);
                                }
                            }
                        }
                    }
                }
            }
            frontier = next;
        }
        let mut out = Vec::new();
        let mut excluded = Vec::new();
        let wildcard_holds = wildcard
            && subject_relation.is_empty()
            && self.check(resource, permission, &SubjectRef::new(subject_type, "*\u{0}anyone")).await?;
        for id in ids {
            let s = SubjectRef::set(subject_type, id.clone(), subject_relation);
            let full = self.check(resource, permission, &s).await?;
            if wildcard_holds && !full {
                excluded.push(id.clone());
            }
            if full && (!wildcard_holds || self.without_wildcards(resource, permission, &s).await?) {
                out.push(FoundSubject { id, excluded: Vec::new() });
            }
        }
        if wildcard_holds {
            out.insert(0, FoundSubject { id: "*".into(), excluded });
        }
        Ok(out)
    }

    async fn without_wildcards(
        &mut self,
        resource: &ObjectRef,
        permission: &str,
        s: &SubjectRef,
    ) -> Result<bool, EvalError> {
        let memo = std::mem::take(&mut self.memo);
        self.ignore_wildcards = true;
        let r = self.check(resource, permission, s).await;
        self.ignore_wildcards = false;
        self.memo = memo;
        r
    }

    /// The expansion tree of `permission` on `resource` (subject sets are leaves).
    pub async fn expand(&mut self, resource: &ObjectRef, permission: &str) -> Result<ExpandNode, EvalError> {
        self.validate(&resource.ty, permission)?;
        self.expand_name(resource, permission, 0).await
    }

    fn expand_name<'a>(
        &'a mut self,
        obj: &'a ObjectRef,
        name: &'a str,
        nest: u32,
    ) -> BoxFuture<'a, Result<ExpandNode, EvalError>> {
        Box::pin(async move {
            let Some(def) = self.schema.definition(&obj.ty) else { return Ok(ExpandNode::Nil) };
            if def.relations.contains_key(name) {
                let rows = self.rows_of(obj, name).await?;
                return Ok(ExpandNode::Relation {
                    resource: obj.clone(),
                    relation: name.to_owned(),
                    subjects: rows.iter().map(|t| t.subject.clone()).collect(),
                });
            }
            let Some(e) = def.permissions.get(name).cloned() else { return Ok(ExpandNode::Nil) };
            let child = self.expand_expr(obj, &e, nest + 1).await?;
            Ok(ExpandNode::Permission { resource: obj.clone(), permission: name.to_owned(), child: Box::new(child) })
        })
    }

    fn expand_expr<'a>(
        &'a mut self,
        obj: &'a ObjectRef,
        e: &'a Expr,
        nest: u32,
    ) -> BoxFuture<'a, Result<ExpandNode, EvalError>> {
        Box::pin(async move {
            if nest > self.max_depth {
                return Err(EvalError::MaxDepth { depth: self.max_depth });
            }
            Ok(match e {
                Expr::Nil => ExpandNode::Nil,
                Expr::Name(n) => self.expand_name(obj, n, nest).await?,
                Expr::Arrow(rel, name) => {
                    let rows = self.rows_of(obj, rel).await?;
                    ExpandNode::Arrow {
                        relation: rel.clone(),
                        name: name.clone(),
                        subjects: rows
                            .iter()
                            .filter(|t| t.subject.relation.is_empty() && t.subject.id != "*")
                            .map(|t| SubjectRef::set(&t.subject.ty, &t.subject.id, name))
                            .collect(),
                    }
                }
                Expr::Union(v) | Expr::Intersection(v) => {
                    let mut kids = Vec::new();
                    for x in v {
                        kids.push(self.expand_expr(obj, x, nest + 1).await?);
                    }
                    if matches!(e, Expr::Union(_)) { ExpandNode::Union(kids) } else { ExpandNode::Intersection(kids) }
                }
                Expr::Exclusion(l, r) => ExpandNode::Exclusion(
                    Box::new(self.expand_expr(obj, l, nest + 1).await?),
                    Box::new(self.expand_expr(obj, r, nest + 1).await?),
                ),
            })
        })
    }
}

/// Folds one branch into a union; true when the union is decided (`has`).
fn union_step(acc: &mut Res, r: Res) -> bool {
    acc.merge_cut(&r);
    match r.v {
        Tri::Has => {
            acc.v = Tri::Has;
            acc.span = r.span;
            true
        }
        Tri::Deep => {
            acc.v = Tri::Deep;
            false
        }
        Tri::No => {
            acc.span = acc.span.max(r.span);
            false
        }
    }
}

fn collect_names(e: &Expr, f: &mut impl FnMut(&str, bool)) {
    match e {
        Expr::Name(n) => f(n, false),
        Expr::Arrow(l, _) => f(l, true),
        Expr::Union(v) | Expr::Intersection(v) => v.iter().for_each(|x| collect_names(x, f)),
        Expr::Exclusion(l, r) => {
            collect_names(l, f);
            collect_names(r, f);
        }
        Expr::Nil => {}
    }
}

/// A LookupSubjects result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundSubject {
    pub id: String,
    pub excluded: Vec<String>,
}

/// An Expand tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpandNode {
    /// A permission of an object, expanded one level into its expression.
    Permission {
        resource: ObjectRef,
        permission: String,
        child: Box<ExpandNode>,
    },
    /// A relation: its stored subjects (direct, wildcard, or subject sets, not expanded).
    Relation {
        resource: ObjectRef,
        relation: String,
        subjects: Vec<SubjectRef>,
    },
    /// `rel->name`: the subject sets `target#name` of each direct subject of `rel`.
    Arrow {
        relation: String,
        name: String,
        subjects: Vec<SubjectRef>,
    },
    Union(Vec<ExpandNode>),
    Intersection(Vec<ExpandNode>),
    Exclusion(Box<ExpandNode>, Box<ExpandNode>),
    Nil,
}

mod reverse;

#[cfg(test)]
mod tests;
