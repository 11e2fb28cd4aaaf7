//! Every error code any program answers, the kit's generic ones and each service's own, is in
//! the error table of `docs/http-api.md`, and the table names no other. A code two programs
//! share (`invalid_user_id`, say) is answered with the same status by both.

use std::collections::{BTreeMap, BTreeSet};

use kit::Code;

/// Every code with its status, from every program's enum.
fn answered() -> Vec<(&'static str, u16, &'static str)> {
    fn of<C: Code>(program: &'static str, all: &[C]) -> Vec<(&'static str, u16, &'static str)> {
        all.iter()
            .map(|c| (c.as_str(), c.status().as_u16(), program))
            .collect()
    }
    [
        of("kit", kit::ErrorCode::ALL),
        of("contract", &contract::order_request::Rule::ALL),
        of("order-service", order_service::error_code::OrderCode::ALL),
        of(
            "product-service",
            product_service::error_code::ProductCode::ALL,
        ),
        of(
            "coupon-service",
            coupon_service::error_code::CouponCode::ALL,
        ),
        of("sync-facade", sync_facade::error_code::FacadeCode::ALL),
        of(
            "data-platform-mock",
            data_platform_mock::error_code::MockCode::ALL,
        ),
    ]
    .concat()
}

/// The codes the HTTP API table of `docs/http-api.md` names in its error codes column.
fn documented() -> BTreeSet<String> {
    let reference = include_str!("../../../docs/http-api.md");
    let start = reference.find("# HTTP API").expect("an HTTP API section");
    let section = &reference[start..];
    let end = section[4..].find("\n#").map_or(section.len(), |e| e + 4);
    section[..end]
        .lines()
        .filter_map(|line| line.strip_prefix('|'))
        .filter_map(|row| row.rsplit('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .filter(|word| word.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_api_reference_lists_exactly_the_codes_the_programs_answer() {
    let known: BTreeSet<String> = answered().iter().map(|(c, _, _)| (*c).to_owned()).collect();
    let documented = documented();
    let undocumented: Vec<_> = known.difference(&documented).collect();
    let unanswered: Vec<_> = documented.difference(&known).collect();
    assert!(
        undocumented.is_empty() && unanswered.is_empty(),
        "codes missing from the table in docs/http-api.md: {undocumented:?}; codes in it that no program answers: {unanswered:?}"
    );
}

#[test]
fn a_code_is_snake_case_an_error_status_and_the_same_status_wherever_it_is_answered() {
    let mut statuses: BTreeMap<&str, BTreeSet<(u16, &str)>> = BTreeMap::new();
    for (code, status, program) in answered() {
        assert!(
            code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{code}"
        );
        assert!((400..600).contains(&status), "{code}: {status}");
        statuses.entry(code).or_default().insert((status, program));
    }
    for (code, answers) in statuses {
        let distinct: BTreeSet<u16> = answers.iter().map(|(s, _)| *s).collect();
        assert_eq!(distinct.len(), 1, "{code} is answered with {answers:?}");
    }
}

#[test]
fn no_program_declares_a_generic_code_of_its_own() {
    let generic: BTreeSet<&str> = kit::ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    for (code, _, program) in answered() {
        assert!(
            program == "kit" || !generic.contains(code),
            "{program} declares the kit's {code}"
        );
    }
}
