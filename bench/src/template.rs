//! The report page's template (`report.md`, filled by `minijinja`) and the
//! Markdown table helpers every section of the page uses.

/// The page's text; see its first paragraph.
const TEMPLATE: &str = include_str!("report.md");

/// Every block of [`TEMPLATE`] as a template of its own, by name. Blocks
/// end with their text (no trailing newlines), as the page puts them
/// together. Strict: a placeholder with no value is an error, never an empty
/// string.
static TEMPLATES: std::sync::LazyLock<minijinja::Environment<'static>> =
    std::sync::LazyLock::new(|| {
        let mut env = minijinja::Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .build()
                .unwrap_or_else(|err| panic!("the report's template syntax: {err:#}")),
        );
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for block in TEMPLATE.split("\n%% ").skip(1) {
            let (name, text) = block.split_once('\n').unwrap_or((block, ""));
            let text = text.trim_end_matches('\n');
            // Our own text, checked by every run and the smoke: a block
            // that does not parse is a bug here.
            env.add_template(name, text)
                .unwrap_or_else(|err| panic!("the report's block {name}: {err:#}"));
        }
        env
    });

/// Block `name` of [`TEMPLATE`], filled with `values`.
pub fn render(name: &str, values: &[(&str, String)]) -> String {
    let context: std::collections::BTreeMap<String, String> = values
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    TEMPLATES
        .get_template(name)
        .and_then(|template| template.render(context))
        .unwrap_or_else(|err| panic!("the report's block {name}: {err:#}"))
}

/// `render(name, &[("key", value.to_string()), …])`, written `fill!(name, key = value, …)`.
macro_rules! fill {
    ($name:expr $(, $key:ident = $value:expr)* $(,)?) => {
        $crate::template::render($name, &[$((stringify!($key), $value.to_string())),*])
    };
}
pub(crate) use fill;

/// `format!` of each value into a table row.
macro_rules! row {
    ($($cell:expr),* $(,)?) => { vec![$($cell.to_string()),*] };
}
pub(crate) use row;

/// A Markdown table, without a newline after its last row.
pub fn table(head: &str, rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let line = |cells: &[&str]| {
        let cells = cells.iter().map(|c| {
            if c.is_empty() {
                " |".into()
            } else {
                format!(" {c} |")
            }
        });
        format!("|{}", cells.collect::<String>())
    };
    let head: Vec<&str> = head.split(" | ").collect();
    let mut lines = vec![line(&head), format!("|{}", "---|".repeat(head.len()))];
    lines.extend(
        rows.into_iter()
            .map(|r| line(&r.iter().map(String::as_str).collect::<Vec<_>>())),
    );
    lines.join("\n")
}
