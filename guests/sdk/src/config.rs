//! Config values and secrets the component's grant names, read through
//! `wasi:config/store`. A name the grant does not list reads as absent.

mod bindings {
    wit_bindgen::generate!({
        path: "wit/config",
        world: "wasi:config/imports",
    });
}

use bindings::wasi::config::store;

/// The value of `name`, if the grant lists it and the tenant set it.
pub fn get(name: &str) -> Option<String> {
    store::get(name).ok().flatten()
}

/// Every value this guest may read, as (name, value).
pub fn all() -> Vec<(String, String)> {
    store::get_all().unwrap_or_default()
}
