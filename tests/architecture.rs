//! The invariants ARCHITECTURE.md states, checked on the parsed source (syn): who may import
//! what, with no import circle between the top-level modules or between files; who reads the
//! environment, who speaks DynamoDB and how, who formats time; the flow's size limits.
//! Items under `#[cfg(test)]` are left out: tests may reach anywhere.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, reason = "a test crate: a panic is how a test fails")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::spanned::Spanned;
use syn::visit::Visit;

/// A source file of `src/` without its test items: its module path and its syntax.
struct Source {
    /// `chat::admit`; the crate root is "".
    module: String,
    path: PathBuf,
    file: syn::File,
    lines: usize,
}

impl Source {
    fn top(&self) -> &str {
        self.module.split("::").next().unwrap_or("")
    }

    fn is(&self, top: &str) -> bool {
        self.top() == top
    }

    fn at(&self, span: proc_macro2::Span) -> String {
        format!("{}:{}", self.path.display(), span.start().line)
    }
}

fn sources() -> Vec<Source> {
    let mut files = vec![];
    collect(Path::new("src"), &mut files);
    files
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix("src").unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let mut file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            without_tests(&mut file.items);
            Source { module: parts.join("::"), path, file, lines: text.lines().count() }
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| a.path().is_ident("cfg") && a.parse_args::<syn::Meta>().is_ok_and(|m| m.path().is_ident("test")))
}

/// Drops every item under `#[cfg(test)]`, in inline modules too.
fn without_tests(items: &mut Vec<syn::Item>) {
    items.retain(|item| {
        let attrs = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Const(c) => &c.attrs,
            _ => return true,
        };
        !is_test(attrs)
    });
    for item in items {
        if let syn::Item::Mod(syn::ItemMod { content: Some((_, inner)), .. }) = item {
            without_tests(inner);
        }
    }
}

/// A macro's body as statements (`stream! { … }`, `tokio::join!(…)`, `format!(…)`), when it
/// parses as statements or as expressions separated by commas; otherwise nothing.
fn macro_body(mac: &syn::Macro) -> Vec<syn::Stmt> {
    use syn::parse::Parser;
    if let Ok(stmts) = syn::Block::parse_within.parse2(mac.tokens.clone()) {
        return stmts;
    }
    let exprs = syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated.parse2(mac.tokens.clone());
    exprs.map(|list| list.into_iter().map(|e| syn::Stmt::Expr(e, None)).collect()).unwrap_or_default()
}

/// Visits a macro's body ([`macro_body`]) as `v` visits code.
fn visit_macro_body<V: for<'a> Visit<'a>>(v: &mut V, m: &syn::Macro) {
    for stmt in macro_body(m) {
        v.visit_stmt(&stmt);
    }
}

/// Every path a file names, with `use` trees spread into whole paths (`use crate::{a::X, b}`
/// names `crate::a::X` and `crate::b`), as segments.
#[derive(Default)]
struct Paths(Vec<(Vec<String>, proc_macro2::Span)>);

impl Paths {
    fn of(file: &syn::File) -> Self {
        let mut p = Self::default();
        p.visit_file(file);
        p
    }

    fn use_tree(&mut self, prefix: &[String], tree: &syn::UseTree) {
        let mut path = prefix.to_vec();
        match tree {
            syn::UseTree::Path(p) => {
                path.push(p.ident.to_string());
                self.use_tree(&path, &p.tree);
            }
            syn::UseTree::Name(n) => {
                path.push(n.ident.to_string());
                self.0.push((path, n.ident.span()));
            }
            syn::UseTree::Rename(r) => {
                path.push(r.ident.to_string());
                self.0.push((path, r.ident.span()));
            }
            syn::UseTree::Glob(g) => self.0.push((path, g.star_token.span())),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(&path, t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_path(&mut self, p: &'ast syn::Path) {
        self.0.push((p.segments.iter().map(|s| s.ident.to_string()).collect(), p.span()));
        syn::visit::visit_path(self, p);
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&[], &u.tree);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        visit_macro_body(self, m);
        syn::visit::visit_macro(self, m);
    }
}

/// The module a path names within the crate (`crate::`, `super::`, `self::`), if any.
fn target(from: &str, path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    let mut here: Vec<&str> = if from.is_empty() { vec![] } else { from.split("::").collect() };
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            here.clear();
            rest = &path[1..];
        }
        Some("super") | Some("self") => {
            while let Some(s) = rest.first().map(String::as_str).filter(|s| *s == "super" || *s == "self") {
                if s == "super" {
                    here.pop();
                }
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    let full: Vec<&str> = here.iter().copied().chain(rest.iter().map(String::as_str)).collect();
    (1..=full.len()).rev().map(|k| full[..k].join("::")).find(|c| modules.contains(c))
}

/// Who imports whom, file by file.
fn imports(sources: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = sources.iter().map(|s| s.module.clone()).collect();
    sources
        .iter()
        .map(|s| {
            let to = Paths::of(&s.file).0.iter().filter_map(|(p, _)| target(&s.module, p, &modules)).filter(|t| *t != s.module && !t.is_empty()).collect();
            (s.module.clone(), to)
        })
        .collect()
}

/// A circle in `edges`, as the modules on it, if there is one.
fn circle(edges: &BTreeMap<String, BTreeSet<String>>, related: impl Fn(&str, &str) -> bool) -> Option<Vec<String>> {
    fn reaches(
        edges: &BTreeMap<String, BTreeSet<String>>,
        related: &dyn Fn(&str, &str) -> bool,
        from: &str,
        to: &str,
        seen: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> bool {
        for next in edges.get(from).into_iter().flatten() {
            if related(from, next) {
                continue;
            }
            path.push(next.clone());
            if next == to || (seen.insert(next.clone()) && reaches(edges, related, next, to, seen, path)) {
                return true;
            }
            path.pop();
        }
        false
    }
    edges.keys().find_map(|m| {
        let mut path = vec![m.clone()];
        reaches(edges, &related, m, m, &mut BTreeSet::new(), &mut path).then_some(path)
    })
}

#[test]
fn the_checks_see_what_they_look_for() {
    let file: syn::File = syn::parse_quote! {
        use crate::{config::Config, llm::{self, table::Row}};
        use super::store::*;
        fn f() { let t = chrono::Utc::now(); super::super::clock::x(); let s = async_stream::stream! { crate::tokens::count(); }; }
        #[cfg(test)]
        mod tests { use crate::api::X; }
    };
    let mut file = file;
    without_tests(&mut file.items);
    let paths: Vec<String> = Paths::of(&file).0.into_iter().map(|(p, _)| p.join("::")).collect();
    for expected in ["crate::config::Config", "crate::llm::self", "crate::llm::table::Row", "super::store", "chrono::Utc::now", "super::super::clock::x", "crate::tokens::count"] {
        assert!(paths.iter().any(|p| p == expected), "{expected} not in {paths:?}");
    }
    assert!(!paths.iter().any(|p| p.contains("api")), "test modules are left out: {paths:?}");
    let modules: BTreeSet<String> = ["config", "llm", "llm::table", "chat", "chat::admit", "clock"].map(String::from).into();
    let seg = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    assert_eq!(target("chat::admit", &seg("crate::llm::table::Row"), &modules).as_deref(), Some("llm::table"));
    assert_eq!(target("chat::admit", &seg("super::super::clock::x"), &modules).as_deref(), Some("clock"));
    assert_eq!(target("chat::admit", &seg("super::Caller"), &modules).as_deref(), Some("chat"));
    assert_eq!(target("chat::admit", &seg("chrono::Utc"), &modules), None);
    let edges: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a")].iter().map(|(f, t)| (f.to_string(), BTreeSet::from([t.to_string()]))).collect();
    assert!(circle(&edges, |_, _| false).is_some());
}

#[test]
fn the_http_edge_never_imports_the_store() {
    let edges = imports(&sources());
    for (from, to) in edges.iter().filter(|(m, _)| m.split("::").next() == Some("api")) {
        assert!(!to.iter().any(|t| t == "store" || t.starts_with("store::")), "{from} imports the store: {to:?}");
    }
}

/// Field reads (`x.store`) and impls (`impl AppState`), by name.
#[derive(Default)]
struct Reaches {
    fields: Vec<(String, proc_macro2::Span)>,
    impls: Vec<(String, proc_macro2::Span)>,
}

impl<'ast> Visit<'ast> for Reaches {
    fn visit_expr_field(&mut self, e: &'ast syn::ExprField) {
        if let syn::Member::Named(name) = &e.member {
            self.fields.push((name.to_string(), name.span()));
        }
        syn::visit::visit_expr_field(self, e);
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        if let syn::Type::Path(p) = &*i.self_ty {
            if let Some(last) = p.path.segments.last() {
                self.impls.push((last.ident.to_string(), last.ident.span()));
            }
        }
        syn::visit::visit_item_impl(self, i);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        visit_macro_body(self, m);
    }
}

/// The edge reaches the store neither by import nor through the state (`state.store`), and the
/// state's methods live in `state.rs`: the flow is `chat`'s and `account`'s functions, not
/// methods scattered on a service locator.
#[test]
fn the_edge_calls_the_flow_and_the_state_has_one_home() {
    for s in sources() {
        let mut r = Reaches::default();
        r.visit_file(&s.file);
        if s.is("api") {
            for (field, span) in &r.fields {
                assert!(field != "store", "{}: the edge reads the state's store", s.at(*span));
            }
        }
        if s.module != "state" {
            for (ty, span) in &r.impls {
                assert!(ty != "AppState", "{}: AppState's methods belong in state.rs", s.at(*span));
            }
        }
    }
    let mut probe = Reaches::default();
    probe.visit_file(&syn::parse_quote! { impl AppState { fn f(&self) { self.store.get(); } } });
    assert_eq!((probe.fields.len(), probe.impls.len()), (1, 1), "the check finds both");
}

#[test]
fn limits_is_pure_policy() {
    let edges = imports(&sources());
    let limits = &edges["limits"];
    for forbidden in ["store", "llm", "api", "chat", "state"] {
        assert!(!limits.iter().any(|m| m == forbidden || m.starts_with(&format!("{forbidden}::"))), "limits imports {forbidden}: {limits:?}");
    }
}

#[test]
fn only_the_store_speaks_dynamodb_and_only_config_reads_the_environment() {
    for s in sources() {
        for (path, span) in Paths::of(&s.file).0 {
            if !s.is("store") {
                assert!(path.first().map(String::as_str) != Some("aws_sdk_dynamodb"), "{}: {}", s.at(span), path.join("::"));
            }
            if s.module != "config" {
                let env_read = path.windows(2).any(|w| w[0] == "env" && (w[1] == "var" || w[1] == "var_os" || w[1] == "vars"));
                assert!(!env_read, "{}: {}", s.at(span), path.join("::"));
            }
        }
    }
}

/// Finds `.send().await`: an SDK call awaited where it is made, not handed to `Store::send_raw`.
struct AwaitedSends(Vec<proc_macro2::Span>);

impl<'ast> Visit<'ast> for AwaitedSends {
    fn visit_expr_await(&mut self, e: &'ast syn::ExprAwait) {
        if let syn::Expr::MethodCall(call) = &*e.base {
            if call.method == "send" && call.args.is_empty() {
                self.0.push(call.method.span());
            }
        }
        syn::visit::visit_expr_await(self, e);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        visit_macro_body(self, m);
    }
}

/// Every DynamoDB call goes through `Store::send_raw` (directly, or through `Store::send`,
/// which also maps the error): its permit, its deadline, its statistics. The SDK's `send()`
/// is only ever made inside the closure handed to it, never awaited where it is built.
#[test]
fn every_dynamodb_call_goes_through_the_stores_one_door() {
    let mut found = vec![];
    for s in sources().iter().filter(|s| s.is("store")) {
        let mut v = AwaitedSends(vec![]);
        v.visit_file(&s.file);
        found.extend(v.0.into_iter().map(|span| s.at(span)));
    }
    assert!(found.is_empty(), "SDK calls awaited outside Store::send_raw: {found:?}");
    let mut probe = AwaitedSends(vec![]);
    probe.visit_file(&syn::parse_quote! { async fn f() { client.get_item().send().await; } });
    assert_eq!(probe.0.len(), 1, "the check finds an awaited send");
}

/// Reads and writes of time outside `clock.rs`: `Utc::now`, `parse_from_str`,
/// `parse_from_rfc3339`, and `.format("…%…")`.
struct TimeFormats(Vec<(String, proc_macro2::Span)>);

impl<'ast> Visit<'ast> for TimeFormats {
    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        let named = segs.windows(2).any(|w| w[0] == "Utc" && w[1] == "now") || segs.last().is_some_and(|l| l == "parse_from_str" || l == "parse_from_rfc3339");
        if named {
            self.0.push((segs.join("::"), p.span()));
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        let strftime = |e: &syn::Expr| matches!(e, syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) if s.value().contains('%'));
        if call.method == "format" && call.args.first().is_some_and(strftime) {
            self.0.push((".format(…%…)".into(), call.method.span()));
        }
        syn::visit::visit_expr_method_call(self, call);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        visit_macro_body(self, m);
        syn::visit::visit_macro(self, m);
    }
}

#[test]
fn time_is_read_and_written_down_only_in_clock() {
    let mut found = vec![];
    for s in sources().iter().filter(|s| s.module != "clock") {
        let mut v = TimeFormats(vec![]);
        v.visit_file(&s.file);
        found.extend(v.0.into_iter().map(|(what, span)| format!("{}: {what}", s.at(span))));
    }
    assert!(found.is_empty(), "time read or formatted outside clock.rs: {found:#?}");
    let mut probe = TimeFormats(vec![]);
    probe.visit_file(&syn::parse_quote! { fn f() { let a = Utc::now(); let b = at.format("%H"); let c = NaiveDate::parse_from_str(s, "%Y"); } });
    assert_eq!(probe.0.len(), 3, "the check finds each: {:?}", probe.0.iter().map(|(w, _)| w).collect::<Vec<_>>());
}

#[test]
fn no_import_circles_between_files() {
    // A child naming its parent's items through `super::` is one module's inside.
    let related = |a: &str, b: &str| a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"));
    if let Some(path) = circle(&imports(&sources()), related) {
        panic!("import circle: {}", path.join(" → "));
    }
}

/// The top-level modules (`config`, `llm`, `chat`, …) form no circle either: `config` reads
/// the environment into the settings other modules define, and none of them imports it back.
#[test]
fn no_import_circles_between_top_level_modules() {
    let top = |m: &str| m.split("::").next().unwrap_or("").to_string();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in imports(&sources()) {
        let entry = edges.entry(top(&from)).or_default();
        entry.extend(to.iter().map(|t| top(t)).filter(|t| *t != top(&from)));
    }
    if let Some(path) = circle(&edges, |_, _| false) {
        panic!("import circle between top-level modules: {}", path.join(" → "));
    }
}

/// A function with a body: its signature and its lines, from `fn` to the closing brace (its
/// doc comment and attributes not counted).
struct Function<'a> {
    sig: &'a syn::Signature,
    span: proc_macro2::Span,
    lines: usize,
}

/// Every function with a body: free, in an impl or a trait.
struct Functions<'a>(Vec<Function<'a>>);

impl<'a> Functions<'a> {
    fn add(&mut self, sig: &'a syn::Signature, block: &syn::Block) {
        let lines = block.brace_token.span.close().end().line + 1 - sig.span().start().line;
        self.0.push(Function { sig, span: sig.span(), lines });
    }
}

impl<'ast> Visit<'ast> for Functions<'ast> {
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.add(&f.sig, &f.block);
        syn::visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        self.add(&f.sig, &f.block);
        syn::visit::visit_impl_item_fn(self, f);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.add(&f.sig, block);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

#[test]
fn no_function_takes_more_than_five_arguments() {
    for s in sources() {
        let mut fns = Functions(vec![]);
        fns.visit_file(&s.file);
        for f in fns.0 {
            assert!(f.sig.inputs.len() <= 5, "{}: fn {} takes {} arguments", s.at(f.span), f.sig.ident, f.sig.inputs.len());
        }
    }
}

#[test]
fn the_flow_reads_in_small_pieces() {
    for s in sources() {
        if s.is("chat") {
            assert!(s.lines <= 300, "{} has {} lines", s.path.display(), s.lines);
        }
        let mut fns = Functions(vec![]);
        fns.visit_file(&s.file);
        for f in fns.0 {
            assert!(f.lines <= 60, "{}: fn {} has {} lines", s.at(f.span), f.sig.ident, f.lines);
        }
    }
}

/// Method calls and paths a module makes, by name.
struct Names(BTreeSet<String>);

impl<'ast> Visit<'ast> for Names {
    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        self.0.insert(format!(".{}()", call.method));
        syn::visit::visit_expr_method_call(self, call);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        for s in &p.segments {
            self.0.insert(s.ident.to_string());
        }
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.0.insert(segs.join("::"));
        syn::visit::visit_path(self, p);
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let mut paths = Paths::default();
        paths.use_tree(&[], &u.tree);
        for (p, _) in paths.0 {
            self.0.extend(p.iter().cloned());
            self.0.insert(p.join("::"));
        }
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        visit_macro_body(self, m);
        syn::visit::visit_macro(self, m);
    }
}

/// The model row that answers a message is decided in one place, at admission
/// (`AppState::model_row`); every later step reads the row the message carries.
#[test]
fn the_model_row_is_decided_once() {
    let mut deciding = vec![];
    for s in sources() {
        let mut names = Names(BTreeSet::new());
        names.visit_file(&s.file);
        if names.0.contains(".row()") {
            deciding.push(s.module.clone());
        }
    }
    assert_eq!(deciding, ["state"], "modules that pick a model row themselves");
}

/// A streamed answer reads the provider's events in the request's own task: the model client
/// neither spawns a reader nor takes async-openai's streaming call, which does.
#[test]
fn the_model_stream_is_read_in_the_requests_own_task() {
    let mut all = BTreeSet::new();
    for s in sources().iter().filter(|s| s.is("llm")) {
        let mut names = Names(BTreeSet::new());
        names.visit_file(&s.file);
        for forbidden in ["tokio::spawn", "spawn", ".create_stream()", "mpsc"] {
            assert!(!names.0.contains(forbidden), "{}: {forbidden}", s.path.display());
        }
        all.extend(names.0);
    }
    assert!(all.contains(".eventsource()"), "the SSE parser reads the byte stream");
}
