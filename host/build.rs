//! `sqlx::migrate!` embeds the migrations when the crate compiles; without
//! this, adding or editing one would not rebuild the crate that applies them.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
