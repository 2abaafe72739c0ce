//! Behaviours whose expectations are per endpoint layout (svc-020,
//! svc-025, svc-026): each case gets its own world with one EndpointSlice
//! built from the case's endpoints (`10.0.1.3 !R S T @node`, or
//! `10.0.1.1@test-node` in a prose case title), the flows of the
//! behaviour are judged against the case's rows, then the slice is
//! deleted and the "after the EndpointSlice is deleted" rows are checked
//! in the same world, for every case.

use super::cases::{
    self, endpoint_spec, endpoints_in_prose, expect_of, match_rows, seq, text_of, Behaviour,
    EndpointSpec, Expect, Flow,
};
use super::flows::{self, Planned};
use super::report::BehaviourReport;
use super::table::{self, add_clients, pods_of_slices, service_addresses, slice_for};
use super::world::{Spec, World};
use super::Ctx;
use serde_norway::Value;

struct Case {
    name: String,
    endpoints: Vec<EndpointSpec>,
    /// flow name → expectation (a row without `flow` covers every flow).
    rows: Vec<Value>,
    after_delete: bool,
}

fn parse_cases(b: &Behaviour) -> Result<Vec<Case>, String> {
    let mut out = Vec::new();
    for c in seq(b.raw.get("expect")) {
        let name =
            text_of(c.get("case")).map_err(|_| "an expect entry without case".to_string())?;
        let after_delete = name.contains("deleted");
        let (endpoints, rows) = match c.get("endpoints") {
            Some(Value::Sequence(eps)) => (
                eps.iter()
                    .map(|e| {
                        let s = text_of(Some(e)).unwrap_or_default();
                        endpoint_spec(&s).ok_or_else(|| format!("endpoint {s:?} not understood"))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                seq(c.get("flows")).to_vec(),
            ),
            _ if c.get("flows").is_some() => (Vec::new(), seq(c.get("flows")).to_vec()),
            // svc-020: the case title lists the endpoints, the row is the expectation.
            _ => (endpoints_in_prose(&name), vec![c.clone()]),
        };
        out.push(Case {
            name,
            endpoints,
            rows,
            after_delete,
        });
    }
    Ok(out)
}

/// `"<per case>"` fields of the Service, from the case title (`iTP
/// Local`, `eTP Cluster`); ones the title does not set are removed.
fn service_for(template: &Value, case: &str) -> Value {
    let mut s = template.clone();
    if let Some(Value::Mapping(spec)) = s.get_mut("spec") {
        let keys: Vec<Value> = spec
            .iter()
            .filter(|(_, v)| v.as_str() == Some("<per case>"))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            let abbrev = match k.as_str() {
                Some("internalTrafficPolicy") => "iTP",
                Some("externalTrafficPolicy") => "eTP",
                _ => "",
            };
            let value = case.split([';', ',']).find_map(|part| {
                let mut w = part.split_whitespace();
                (w.next() == Some(abbrev)).then(|| w.next().map(str::to_string))?
            });
            match value {
                Some(v) => {
                    spec.insert(k, Value::String(v));
                }
                None => {
                    spec.remove(&k);
                }
            }
        }
    }
    s
}

fn planned_for(flows: &[Flow], rows: &[Value], prefix: &str) -> Vec<Planned> {
    flows
        .iter()
        .map(|f| {
            let row = match_rows(rows, &f.name).or_else(|| {
                rows.iter()
                    .find(|r| r.get("flow").is_none() && r.get("output").is_some())
            });
            let expect: Result<Expect, String> = match row {
                Some(r) => {
                    expect_of(r).map_err(|e| format!("expectation not interpretable: {e:#}"))
                }
                None => Err("the case has no row for this flow".into()),
            };
            let mut flow = f.clone();
            flow.name = format!("{prefix}: {}", f.name);
            Planned {
                flow,
                expect,
                note: row
                    .and_then(|r| r.get("note"))
                    .and_then(|n| text_of(Some(n)).ok()),
            }
        })
        .collect()
}

pub async fn run(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let mut r = BehaviourReport::new(&b.id, &b.title);
    let prep = (|| -> Result<_, String> {
        let mut notes = Vec::new();
        let services = table::setup_list(b, "services", ctx.all, &mut notes)?;
        let flows = cases::flows(
            seq(b.raw.get("action").and_then(|a| a.get("flows"))),
            &cases::sources(b.raw.get("action")),
            ctx.conv,
        )
        .map_err(|e| format!("{e:#}"))?;
        let cases = parse_cases(b)?;
        Ok((services, flows, cases, notes))
    })();
    let (services, flows, cases, notes) = match prep {
        Ok(p) => p,
        Err(why) => {
            return BehaviourReport::unsupported(&b.id, &b.title, why);
        }
    };
    r.notes = notes;
    r.notes.push(
        "one world per case; the case's endpoints become one EndpointSlice (the Service's \
         ports); after each case the slice is deleted and the deletion rows are checked"
            .into(),
    );
    let deleted: Option<&Case> = cases.iter().find(|c| c.after_delete);
    for case in cases.iter().filter(|c| !c.after_delete) {
        let svcs: Vec<Value> = services
            .iter()
            .map(|s| service_for(s, &case.name))
            .collect();
        let slices: Vec<Value> = svcs
            .iter()
            .map(|s| slice_for(s, &case.endpoints, ctx.conv))
            .collect();
        let mut spec = Spec::default();
        spec.docs.extend(svcs.iter().cloned());
        spec.docs.extend(slices.iter().cloned());
        pods_of_slices(&slices, ctx.conv, &mut spec);
        add_clients(&flows, ctx.conv, &mut spec);
        spec.routed.extend(
            service_addresses(&svcs).into_iter().filter(|ip| {
                !ctx.conv.node_ips.contains(ip) && !ctx.conv.service_cidr.contains(ip)
            }),
        );
        let planned = planned_for(&flows, &case.rows, &case.name);
        match World::build(ctx.conv, ctx.path, &spec).await {
            Err(e) => {
                r.error(&e.context(format!("case {:?}", case.name)));
                break;
            }
            Ok(mut w) => {
                r.flows.extend(flows::run(&w, &planned).await);
                if let Some(d) = deleted {
                    let step = async {
                        w.apply(&svcs).await?;
                        let prefix = format!("{} → slice deleted", case.name);
                        anyhow::Ok(flows::run(&w, &planned_for(&flows, &d.rows, &prefix)).await)
                    };
                    match step.await {
                        Ok(f) => r.flows.extend(f),
                        Err(e) => r.error(&e),
                    }
                }
                if let Err(e) = w.teardown() {
                    r.error(&e);
                }
            }
        }
    }
    r.decide();
    r
}
