use proptest::prelude::*;

use super::*;

const IDENTITY: &str = include_str!("../../../identity/schema.zed");
const ROLE: &str = include_str!("../../schema.zed");

fn with_base(module: &str, src: &str) -> Result<Schema, Vec<SchemaError>> {
    compile(&[
        ModuleSource { module: "identity", source: IDENTITY },
        ModuleSource { module: "permissions", source: ROLE },
        ModuleSource { module, source: src },
    ])
}

fn first_err(module: &str, src: &str) -> SchemaError {
    match with_base(module, src) {
        Ok(_) => panic!("schema unexpectedly valid:\n{src}"),
        Err(e) => e.into_iter().next().expect("at least one error"),
    }
}

#[test]
fn identity_and_role_compile() {
    let s = compile(&[
        ModuleSource { module: "identity", source: IDENTITY },
        ModuleSource { module: "permissions", source: ROLE },
    ])
    .expect("valid");
    assert!(s.has("organization", "administer"));
    assert!(s.grantable.contains(&("organization".to_owned(), "invite".to_owned())));
    // Generated hooks.
    assert_eq!(
        s.definitions["organization"].permissions["role__organization__invite"],
        Expr::Arrow("custom_role".into(), "organization__invite".into())
    );
    assert!(s.definitions["role"].relations.contains_key("grant__organization__invite"));
}

#[test]
fn precedence_and_associativity() {
    let s = with_base(
        "acceptance",
        "definition test_x {\n relation a: user\n relation b: user\n relation c: user\n permission v = a - b - c\n permission w = (a + b) - c\n permission i = a & (b + c)\n}",
    )
    .expect("valid");
    let d = &s.definitions["test_x"];
    let n = |x: &str| Box::new(Expr::Name(x.into()));
    assert_eq!(d.permissions["v"], Expr::Exclusion(Box::new(Expr::Exclusion(n("a"), n("b"))), n("c")));
    assert_eq!(
        d.permissions["w"],
        Expr::Exclusion(Box::new(Expr::Union(vec![Expr::Name("a".into()), Expr::Name("b".into())])), n("c"))
    );
    assert_eq!(d.permissions["v"].to_text(), "a - b - c");
    assert_eq!(d.permissions["w"].to_text(), "(a + b) - c");
    assert_eq!(d.permissions["i"].to_text(), "a & (b + c)");
}

#[test]
fn unknown_type_points_at_the_type() {
    let e = first_err("acceptance", "definition test_d {\n  relation viewer: usr\n}");
    assert_eq!((e.code, e.field()), (Code::UnknownType, "schema:2:20".to_owned()));
    assert_eq!(e.module, "acceptance");
}

#[test]
fn unknown_name_points_at_the_name() {
    let src = "definition test_d {\n  relation viewer: user\n  relation edit_rel: user\n  permission view = viewer + edtor\n}";
    let e = first_err("acceptance", src);
    assert_eq!(e.code, Code::UnknownName);
    assert_eq!((e.line, e.column), (4, 30));
}

#[test]
fn mixed_operators() {
    let src =
        "definition test_d {\n relation a: user\n relation b: user\n relation c: user\n permission v = a + b - c\n}";
    let e = first_err("acceptance", src);
    assert_eq!((e.code, e.line, e.column), (Code::MixedOperators, 5, 23));
}

#[test]
fn missing_brace_is_syntax_at_eof() {
    let src = "definition test_d {\n  relation a: user\n";
    let e = first_err("acceptance", src);
    assert_eq!((e.code, e.line, e.column), (Code::Syntax, 3, 1));
    let src = "definition test_d {\n  relation a: user";
    let e = first_err("acceptance", src);
    assert_eq!((e.code, e.line, e.column), (Code::Syntax, 2, 19));
}

#[test]
fn arrow_left_must_be_plain_relation() {
    let src = "definition test_d {\n relation member: team#member\n permission v = member->view\n}";
    let e = first_err("acceptance", src);
    assert_eq!((e.code, e.line, e.column), (Code::ArrowLeftNotRelation, 3, 17));
    let src = "definition test_d {\n relation r: user\n permission p = r\n permission v = p->view\n}";
    assert_eq!(first_err("acceptance", src).code, Code::ArrowLeftNotRelation);
}

#[test]
fn arrow_right_must_exist_on_every_type() {
    let src = "definition test_d {\n relation o: organization | team\n permission v = o->administer\n}";
    let e = first_err("acceptance", src);
    assert_eq!((e.code, e.line, e.column), (Code::ArrowRightMissing, 3, 20));
    assert!(e.message.contains("team"), "{}", e.message);
}

#[test]
fn permission_cycles() {
    let src = "definition test_d {\n relation r: user\n permission a = b + r\n permission b = a\n}";
    let errs = with_base("acceptance", src).expect_err("cycle");
    assert!(errs.iter().all(|e| e.code == Code::PermissionCycle));
    assert_eq!(errs.len(), 2);
    // Through another object it is fine (recursion in data, e.g. parent->view).
    with_base(
        "acceptance",
        "definition test_f {\n relation parent: test_f\n relation v: user\n permission view = v + parent->view\n}",
    )
    .expect("arrow recursion is valid");
}

#[test]
fn subject_relations_and_wildcards() {
    let e = first_err("acceptance", "definition test_d {\n relation r: team#nope\n}");
    assert_eq!((e.code, e.line, e.column), (Code::UnknownSubjectRelation, 2, 19));
    let e = first_err("acceptance", "definition test_d {\n relation r: user:*#member\n}");
    assert_eq!((e.code, e.line, e.column), (Code::WildcardSubjectRelation, 2, 20));
    // A permission of the subject type is a valid subject relation.
    with_base("acceptance", "definition test_d {\n relation r: user:* | team#view | organization#member\n}")
        .expect("valid");
}

#[test]
fn duplicates_and_reserved_names() {
    let e = first_err("acceptance", "definition test_d {\n relation a: user\n permission a = a\n}");
    assert_eq!((e.code, e.line, e.column), (Code::DuplicateName, 3, 13));
    let e = first_err("acceptance", "definition test_d {\n relation a__b: user\n}");
    assert_eq!(e.code, Code::ReservedName);
    let e = first_err("acceptance", "definition test_d {\n relation nil: user\n}");
    assert_eq!(e.code, Code::ReservedName);
    let e = first_err("acceptance", "definition role {\n relation a: user\n}");
    assert_eq!(e.code, Code::ReservedName);
    let e = first_err("acceptance", "definition team {\n relation a: user\n}");
    assert_eq!(e.code, Code::DefinitionConflict);
    let e = first_err("acceptance", "definition test_d {}\ndefinition test_d {}");
    assert_eq!((e.code, e.line), (Code::DuplicateName, 2));
}

#[test]
fn hooks_are_validated_and_generated() {
    let ok = "definition test_d {\n relation org: organization\n relation editor: user\n permission edit = editor + org->role__test_d__edit\n}";
    let s = with_base("acceptance", ok).expect("valid");
    assert!(s.grantable.contains(&("test_d".to_owned(), "edit".to_owned())));
    assert!(s.definitions["organization"].permissions.contains_key("role__test_d__edit"));
    assert_eq!(s.definitions["role"].permissions["test_d__edit"], Expr::Name("grant__test_d__edit".into()));
    let text = s.to_text();
    assert!(text.contains("// generated: custom-role hooks"), "{text}");
    assert!(text.contains("permission role__test_d__edit = custom_role->test_d__edit"), "{text}");

    let bad = "definition test_d {\n relation org: organization\n relation editor: user\n permission edit = editor + org->role__test_d__share\n}";
    let e = first_err("acceptance", bad);
    assert_eq!((e.code, e.line, e.column), (Code::BadHook, 4, 34));
    let no_org = "definition test_d {\n relation o: organization\n permission edit = o->role__test_d__edit\n}";
    assert_eq!(first_err("acceptance", no_org).code, Code::BadHook);
}

#[test]
fn comments_and_columns_in_scalar_values() {
    let src = "/** doc é */\n// line\ndefinition test_d { /* é */ relation a: usr }";
    let e = first_err("acceptance", src);
    // `usr` is at column 41 counting `é` as one.
    assert_eq!((e.code, e.line, e.column), (Code::UnknownType, 3, 41));
}

#[test]
fn limits() {
    let mut src = String::from("definition test_d {\n relation a: user\n permission p = ");
    for _ in 0..40 {
        src.push('(');
    }
    src.push('a');
    for _ in 0..40 {
        src.push(')');
    }
    src.push_str("\n}");
    assert_eq!(first_err("acceptance", &src).code, Code::LimitExceeded);
    let big = "// ".to_owned() + &"x".repeat(MAX_MODULE_BYTES);
    assert_eq!(first_err("acceptance", &big).code, Code::LimitExceeded);
    // At most 50 errors.
    let mut many = String::from("definition test_d {\n");
    for i in 0..80 {
        many.push_str(&format!(" relation r{i}: nope\n"));
    }
    many.push('}');
    assert_eq!(with_base("acceptance", &many).expect_err("invalid").len(), MAX_ERRORS);
}

#[test]
fn nil_and_bad_module_names() {
    with_base("acceptance", "definition test_d {\n permission p = nil\n}").expect("valid");
    let e = compile(&[ModuleSource { module: "Bad", source: "" }]).expect_err("invalid");
    assert_eq!(e[0].code, Code::InvalidModule);
}

// ---- properties ----

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,5}"
        .prop_filter("not reserved", |s| !["nil", "definition", "relation", "permission"].contains(&s.as_str()))
}

fn expr(names: Vec<String>) -> impl Strategy<Value = Expr> {
    let leaf = prop::sample::select(names).prop_map(Expr::Name);
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::Union),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::Intersection),
            (inner.clone(), inner).prop_map(|(l, r)| Expr::Exclusion(Box::new(l), Box::new(r))),
        ]
    })
}

proptest! {
    /// The parser never panics, and every error position lies inside the text (or at its end).
    #[test]
    fn parser_total_and_positions_in_bounds(src in "[a-z{}()#:|=+&*/\\- \n-]{0,200}") {
        let lines: Vec<&str> = src.split('\n').collect();
        if let Err(errs) = compile(&[ModuleSource { module: "fuzz", source: &src }]) {
            for e in errs {
                prop_assert!(e.line >= 1 && (e.line as usize) <= lines.len(), "{e}");
                let len = lines[e.line as usize - 1].chars().count() as u32;
                prop_assert!(e.column >= 1 && e.column <= len + 1, "{e}");
            }
        }
    }

    /// Rendering a compiled expression and parsing it again yields the same expression.
    #[test]
    fn expressions_round_trip((rels, e) in prop::collection::btree_set(name(), 1..5).prop_flat_map(|rels| {
        let rels: Vec<String> = rels.into_iter().collect();
        (Just(rels.clone()), expr(rels))
    })) {
        let mut src = String::from("definition test_p {\n");
        for r in &rels {
            src.push_str(&format!("  relation {r}: user\n"));
        }
        src.push_str(&format!("  permission zz_p = {}\n}}\n", e.to_text()));
        let s = compile(&[
            ModuleSource { module: "identity", source: IDENTITY },
            ModuleSource { module: "prop", source: &src },
        ]).map_err(|e| TestCaseError::fail(format!("{e:?}\n{src}")))?;
        prop_assert_eq!(&s.definitions["test_p"].permissions["zz_p"], &e);
        // And the merged text (generated parts included) is valid syntax.
        let again = parse::parse(&s.to_text());
        prop_assert!(again.as_ref().is_ok_and(|(_, errs)| errs.is_empty()), "{:?}", again);
    }
}
