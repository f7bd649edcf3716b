//! Links wcslib, the C library behind `soda::wcslib`, as pkg-config describes the system's copy
//! (Debian's `wcslib-dev`, 7.12).

fn main() {
    if let Err(e) = pkg_config::Config::new()
        .atleast_version("7.0")
        .probe("wcslib")
    {
        panic!("wcslib not found through pkg-config (install wcslib-dev): {e}");
    }
}
