//! Tests of the command line.

use clap::CommandFactory as _;
use wirespan::span::route::{RouteSource, Unmatched};

use super::*;

fn routes(args: &[&str]) -> Result<RouteRules, String> {
    let command_line = ["wirespan", "run"].iter().chain(args);
    match Cli::try_parse_from(command_line)
        .map_err(|e| e.to_string())?
        .command
    {
        Command::Run { routes, .. } => routes.route_rules().map_err(|e| e.to_string()),
        _ => unreachable!(),
    }
}

#[test]
fn cli_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn route_options_parse_repeated_and_comma_separated() {
    // WIRESPAN_ROUTES is read when --routes is absent: these tests assume it unset.
    if std::env::var_os("WIRESPAN_ROUTES").is_some() {
        return;
    }
    assert_eq!(routes(&[]).unwrap(), RouteRules::default());
    let rules = routes(&[
        "--routes",
        "pattern=/users/{id}/cart,unmatched=none",
        "--routes=pattern=/files/*",
    ])
    .unwrap();
    assert_eq!(rules.unmatched(), Unmatched::None);
    let cart = rules.route("/users/42/cart").unwrap();
    assert_eq!(cart.template, "/users/{id}/cart");
    assert_eq!(cart.source, RouteSource::Template);
    assert_eq!(rules.route("/files/a/b").unwrap().template, "/files/*");
    assert_eq!(rules.route("/order/17"), None);
}

#[test]
fn route_option_errors_say_what_is_allowed() {
    let err = routes(&["--routes", "colour=blue"]).unwrap_err();
    assert!(
        err.contains("colour=blue") && err.contains("unmatched=heuristic|path|none"),
        "{err}"
    );
    let err = routes(&["--routes", "unmatched=guess"]).unwrap_err();
    assert!(
        err.contains("guess") && err.contains("unmatched=path"),
        "{err}"
    );
    let err = routes(&["--routes", "pattern=/files/*/x"]).unwrap_err();
    assert!(err.contains("last segment"), "{err}");
}
