use super::*;

fn rules(templates: &[&str], unmatched: Unmatched) -> RouteRules {
    let templates: Vec<String> = templates.iter().map(|&t| t.to_owned()).collect();
    RouteRules::new(&templates, unmatched).unwrap()
}

fn route(rules: &RouteRules, path: &str) -> Option<(String, RouteSource)> {
    rules.route(path).map(|r| (r.template, r.source))
}

#[test]
fn ids_in_the_issue_become_id() {
    for (path, want) in [
        ("/order/17", "/order/{id}"),
        ("/users/42/cart", "/users/{id}/cart"),
        ("/order/17/items/0a1b2c3d4e5f", "/order/{id}/items/{id}"),
        ("/users/123e4567-e89b-12d3-a456-426614174000", "/users/{id}"),
        (
            "/users/123E4567-E89B-12D3-A456-426614174000/cart",
            "/users/{id}/cart",
        ),
        ("/users/123e4567e89b12d3a456426614174000", "/users/{id}"),
        ("/blobs/deadbeef00", "/blobs/{id}"),
        ("/blobs/DEADBEEF00", "/blobs/{id}"),
        ("/s/aGVsbG8gd29ybGQ1MjM0", "/s/{id}"),
        ("/s/Xk9_a-Zq3Lm0Pw7Rt5Yb", "/s/{id}"),
        ("/s/dGVzdDEyMzQ1Njc4OTA=", "/s/{id}"),
        ("/k/a8f3k29x", "/k/{id}"),
        ("/u/user1234", "/u/{id}"),
        ("/p/how-to-use-rust-2024", "/p/{id}"),
        ("/v1/orders/17/", "/v1/orders/{id}/"),
        ("/a/0", "/a/{id}"),
    ] {
        assert_eq!(heuristic(path), want, "{path}");
    }
}

#[test]
fn words_versions_and_files_stay() {
    for path in [
        "/",
        "",
        "/api/v1/users",
        "/api/v2beta/cart",
        "/api/v1alpha2/things",
        "/V3/x",
        "/healthz",
        "/index.html",
        "/favicon.ico",
        "/static/app.min.js",
        "/deadbeef",
        "/sha256sum",
        "/h264",
        "/oauth2/callback",
        "/x86_64",
        "/caf%C3%A9/menu",
        "/getting-started",
        "/a//b",
        "/users/",
        "*",
    ] {
        assert_eq!(heuristic(path), path, "{path}");
    }
}

#[test]
fn huge_paths_are_bounded() {
    let long: String = "/a".repeat(1000);
    let got = heuristic(&long);
    let want = format!("{}/{{rest}}", "/a".repeat(MAX_SEGMENTS));
    assert_eq!(got, want);
    let segment = "x".repeat(MAX_SEGMENT_LEN + 1);
    assert_eq!(heuristic(&format!("/f/{segment}")), "/f/{id}");
    let segment = "x".repeat(MAX_SEGMENT_LEN);
    assert_eq!(heuristic(&format!("/f/{segment}")), format!("/f/{segment}"));
}

#[test]
fn templates_win_over_the_heuristic_first_match_first() {
    let r = rules(
        &[
            "/users/{id}/cart",
            "/users/:user/orders/:order",
            "/files/{path...}",
            "/assets/*",
            "/users/{id}",
            "/users/me",
        ],
        Unmatched::Heuristic,
    );
    let t = RouteSource::Template;
    assert_eq!(
        route(&r, "/users/42/cart"),
        Some(("/users/{id}/cart".into(), t))
    );
    assert_eq!(
        route(&r, "/users/alice/orders/9"),
        Some(("/users/:user/orders/:order".into(), t))
    );
    assert_eq!(
        route(&r, "/files/a/b/c.txt"),
        Some(("/files/{path...}".into(), t))
    );
    assert_eq!(route(&r, "/files/"), Some(("/files/{path...}".into(), t)));
    assert_eq!(route(&r, "/files"), Some(("/files/{path...}".into(), t)));
    assert_eq!(route(&r, "/assets/x.css"), Some(("/assets/*".into(), t)));
    // The first match wins: `/users/{id}` comes before `/users/me`.
    assert_eq!(route(&r, "/users/me"), Some(("/users/{id}".into(), t)));
    // A parameter needs a non-empty segment, a literal matches exactly, the trailing slash
    // counts: these fall through to the heuristic.
    let h = RouteSource::Heuristic;
    assert_eq!(route(&r, "/users//cart"), Some(("/users//cart".into(), h)));
    assert_eq!(route(&r, "/users/42/"), Some(("/users/{id}/".into(), h)));
    assert_eq!(
        route(&r, "/users/42/cart/x"),
        Some(("/users/{id}/cart/x".into(), h))
    );
    assert_eq!(route(&r, "/Users/42"), Some(("/Users/{id}".into(), h)));
    // A query is never part of a route.
    assert_eq!(
        route(&r, "/users/42/cart?token=s3cret"),
        Some(("/users/{id}/cart".into(), t))
    );
}

#[test]
fn each_unmatched_mode() {
    let path = "/order/17";
    let default = RouteRules::default();
    assert_eq!(default.unmatched(), Unmatched::Heuristic);
    assert_eq!(
        route(&default, path),
        Some(("/order/{id}".into(), RouteSource::Heuristic))
    );
    let r = rules(&["/x/{id}"], Unmatched::Path);
    assert_eq!(
        route(&r, path),
        Some(("/order/17".into(), RouteSource::Path))
    );
    assert_eq!(
        route(&r, "/order/17?token=s3cret"),
        Some(("/order/17".into(), RouteSource::Path))
    );
    let r = rules(&["/x/{id}"], Unmatched::None);
    assert_eq!(route(&r, path), None);
    assert_eq!(
        route(&r, "/x/1"),
        Some(("/x/{id}".into(), RouteSource::Template))
    );
    assert_eq!(RouteSource::Program.as_str(), "program");
    assert_eq!(RouteSource::Template.as_str(), "template");
    assert_eq!(RouteSource::Heuristic.as_str(), "heuristic");
    assert_eq!(RouteSource::Path.as_str(), "path");
}

#[test]
fn malformed_templates_are_refused_with_the_reason() {
    let err = |t: &str| RouteRules::new(&[t.to_owned()], Unmatched::Heuristic).unwrap_err();
    assert!(matches!(
        err("users/{id}"),
        RouteRuleError::NoLeadingSlash(_)
    ));
    assert!(matches!(err(""), RouteRuleError::NoLeadingSlash(_)));
    for t in [
        "/users/{id",
        "/users/id}",
        "/users/a{id}",
        "/users/{id}x",
        "/{a{b}",
    ] {
        assert!(matches!(err(t), RouteRuleError::Braces { .. }), "{t}");
    }
    for t in ["/users/{}", "/users/:", "/files/{...}", "/a/{na-me}"] {
        assert!(matches!(err(t), RouteRuleError::BadName { .. }), "{t}");
    }
    for t in ["/files/{p...}/x", "/files/*/x", "/files/*rest/"] {
        assert!(matches!(err(t), RouteRuleError::RestNotLast { .. }), "{t}");
    }
    for t in ["/img/*.png", "/img/a*", "/a/**", "/a/b*c"] {
        assert!(matches!(err(t), RouteRuleError::Star { .. }), "{t}");
    }
    let text = err("/files/*/x").to_string();
    assert!(
        text.contains("/files/*/x") && text.contains("last segment"),
        "{text}"
    );
    // Colons inside a literal are literal.
    let r = rules(&["/v1/models/m:predict"], Unmatched::None);
    assert_eq!(
        route(&r, "/v1/models/m:predict"),
        Some(("/v1/models/m:predict".into(), RouteSource::Template))
    );
}

#[test]
fn options_parse_and_say_what_is_allowed() {
    assert_eq!(
        "unmatched=path".parse(),
        Ok(RouteOption::Unmatched(Unmatched::Path))
    );
    assert_eq!(
        " pattern=/users/{id} ".parse(),
        Ok(RouteOption::Pattern("/users/{id}".into()))
    );
    let opts: Vec<RouteOption> = ["pattern=/a/{id}", "unmatched=none", "unmatched=path"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let r = RouteRules::from_options(&opts).unwrap();
    assert_eq!(r, rules(&["/a/{id}"], Unmatched::Path));
    assert_eq!(
        RouteRules::from_options(&[]).unwrap(),
        RouteRules::default()
    );

    let bad = "unmatched=guess".parse::<RouteOption>().unwrap_err();
    assert_eq!(bad, RouteRuleError::BadUnmatched("guess".into()));
    assert!(bad.to_string().contains("heuristic") && bad.to_string().contains("none"));
    for s in ["colour=blue", "unmatched", "", "patterns=/a"] {
        let bad = s.parse::<RouteOption>().unwrap_err();
        assert!(matches!(bad, RouteRuleError::UnknownOption(_)), "{s}");
        assert!(bad.to_string().contains("pattern=TEMPLATE"), "{bad}");
    }
    assert!(matches!(
        "pattern=users".parse::<RouteOption>(),
        Err(RouteRuleError::NoLeadingSlash(_))
    ));
}
