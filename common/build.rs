//! `sqlx::migrate!` embeds `migrations/` at compile time; without this a new
//! migration file would not rebuild `common`, and the binaries would run
//! without it.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
