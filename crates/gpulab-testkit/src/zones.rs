//! The zones of a region as an account sees them, beyond what moto models, played in the fault proxy:
//!
//! - **Local Zones.** An account opted in to a Local Zone sees it in `DescribeAvailabilityZones`
//!   (`zoneType` `local-zone`, with its parent zone) and in `DescribeInstanceTypeOfferings
//!   --location-type availability-zone` for the types it offers (EC2 API reference; AWS Local Zones
//!   user guide, "Available Local Zones": Los Angeles, `us-west-2-lax-1a`, offers G4dn among others).
//!   Its name sorts before the region's own zones. moto knows no Local Zone and refuses a subnet in one;
//!   EKS refuses a control plane there.
//! - **Control-plane capacity.** EKS refuses `CreateCluster` with
//!   `UnsupportedAvailabilityZoneException` when a subnet lies in a zone without control-plane capacity,
//!   naming the zones it accepts in `validZones` (EKS API reference, CreateCluster errors; the message as
//!   EKS words it, e.g. for `us-east-1e`). [`ZoneWorld::refuse_control_plane_in`] marks such zones.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Mutex;

use serde_json::json;

use crate::fault_proxy::{ProxyRequest, ProxyResponse};
use crate::moto::{percent_decode, query, subnet_zones};

/// A Local Zone the emulated account is opted in to.
#[derive(Debug, Clone)]
pub struct LocalZone {
    /// Its name, e.g. `us-west-2-lax-1a`.
    pub name: String,
    /// The region's zone it hangs off.
    pub parent: String,
    /// Instance type families it offers (`g4dn` offers `g4dn.xlarge` …).
    pub families: Vec<String>,
}

/// The zones' behaviours above, in front of moto at `moto`.
pub struct ZoneWorld {
    moto: SocketAddr,
    local_zones: Vec<LocalZone>,
    refused: Mutex<BTreeSet<String>>,
}

impl ZoneWorld {
    /// An account in us-west-2 opted in to the Los Angeles Local Zone, as many are for its latency.
    pub fn new(moto: SocketAddr) -> Self {
        ZoneWorld {
            moto,
            local_zones: vec![LocalZone {
                name: "us-west-2-lax-1a".into(),
                parent: "us-west-2a".into(),
                families: vec!["c5".into(), "g4dn".into(), "m5".into(), "r5".into()],
            }],
            refused: Mutex::new(BTreeSet::new()),
        }
    }

    /// From now on, EKS has no control-plane capacity in `zone`.
    pub fn refuse_control_plane_in(&self, zone: &str) {
        self.refused
            .lock()
            .expect("zones lock")
            .insert(zone.to_string());
    }

    /// The answer to `req` where the zones differ from moto's, else `None`.
    pub fn handle(&self, req: &ProxyRequest) -> Option<ProxyResponse> {
        match (req.service.as_str(), req.operation.as_str()) {
            ("ec2", "DescribeAvailabilityZones") => self.describe_zones(req),
            ("ec2", "DescribeInstanceTypeOfferings") => self.describe_offerings(req),
            ("eks", "POST /clusters") => self.create_cluster(req),
            _ => None,
        }
    }

    fn describe_zones(&self, req: &ProxyRequest) -> Option<ProxyResponse> {
        let params = form(&req.body);
        let xml = forward(self.moto, &params)?;
        let wanted = filter_values(&params, "zone-type");
        if !wanted.is_empty() && !wanted.iter().any(|t| t == "local-zone") {
            return Some(ProxyResponse::xml(xml));
        }
        let items: String = self
            .local_zones
            .iter()
            .map(|z| {
                let group = z.name.trim_end_matches(|c: char| c.is_ascii_lowercase());
                format!(
                    "<item><zoneName>{}</zoneName><zoneType>local-zone</zoneType><zoneState>available</zoneState>\
                     <optInStatus>opted-in</optInStatus><groupName>{group}</groupName>\
                     <parentZoneName>{}</parentZoneName><regionName>{}</regionName></item>",
                    z.name,
                    z.parent,
                    region_of(&z.parent)
                )
            })
            .collect();
        Some(ProxyResponse::xml(insert_before(
            &xml,
            "</availabilityZoneInfo>",
            &items,
        )))
    }

    fn describe_offerings(&self, req: &ProxyRequest) -> Option<ProxyResponse> {
        let params = form(&req.body);
        let location = params
            .iter()
            .find(|(k, _)| k == "LocationType")
            .map(|(_, v)| v.as_str());
        if location != Some("availability-zone") {
            return None;
        }
        let xml = forward(self.moto, &params)?;
        let mut items = String::new();
        for instance_type in filter_values(&params, "instance-type") {
            let family = instance_type.split('.').next().unwrap_or_default();
            for zone in self
                .local_zones
                .iter()
                .filter(|z| z.families.iter().any(|f| f == family))
            {
                items.push_str(&format!(
                    "<item><instanceType>{instance_type}</instanceType><locationType>availability-zone</locationType>\
                     <location>{}</location></item>",
                    zone.name
                ));
            }
        }
        Some(ProxyResponse::xml(insert_before(
            &xml,
            "</instanceTypeOfferingSet>",
            &items,
        )))
    }

    /// EKS's refusal of a control plane in a Local Zone or a zone without capacity.
    fn create_cluster(&self, req: &ProxyRequest) -> Option<ProxyResponse> {
        let body: serde_json::Value = serde_json::from_slice(&req.body).ok()?;
        let subnets: Vec<String> = body["resourcesVpcConfig"]["subnetIds"]
            .as_array()?
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect();
        let zones = subnet_zones(self.moto, &subnets);
        let refused = self.refused.lock().expect("zones lock").clone();
        let bad = zones
            .values()
            .find(|z| refused.contains(*z) || self.local_zones.iter().any(|l| &l.name == *z))?;
        let region = match self.local_zones.iter().find(|l| &l.name == bad) {
            Some(local) => region_of(&local.parent),
            None => region_of(bad),
        };
        let standard = forward(
            self.moto,
            &[
                ("Action".into(), "DescribeAvailabilityZones".into()),
                ("Version".into(), "2016-11-15".into()),
            ],
        )
        .unwrap_or_default();
        let valid: Vec<String> = standard
            .split("<zoneName>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</zoneName>").map(|(z, _)| z.to_string()))
            .filter(|z| z.starts_with(region) && !refused.contains(z))
            .collect();
        let name = body["name"].as_str().unwrap_or_default();
        let mut answer = ProxyResponse::json(
            400,
            &json!({
                "message": format!(
                    "Cannot create cluster '{name}' because {bad}, the targeted availability zone, does not currently have sufficient capacity to support the cluster. Retry and choose from these availability zones: {}",
                    valid.join(", ")
                ),
                "clusterName": name,
                "validZones": valid,
            }),
        );
        answer.headers.push((
            "x-amzn-errortype".into(),
            "UnsupportedAvailabilityZoneException".into(),
        ));
        Some(answer)
    }
}

/// The region of a zone name (`us-west-2a` → `us-west-2`).
fn region_of(zone: &str) -> &str {
    zone.trim_end_matches(|c: char| c.is_ascii_lowercase())
}

fn insert_before(xml: &str, closing: &str, items: &str) -> String {
    match xml.find(closing) {
        Some(at) => format!("{}{items}{}", &xml[..at], &xml[at..]),
        // An empty set is written `<instanceTypeOfferingSet/>`.
        None => {
            let empty = format!(
                "<{}/>",
                closing.trim_start_matches("</").trim_end_matches('>')
            );
            xml.replacen(
                &empty,
                &format!("<{0}>{items}</{0}>", &empty[1..empty.len() - 2]),
                1,
            )
        }
    }
}

/// The values of the EC2 filter named `name` (`Filter.N.Name` / `Filter.N.Value.M`).
fn filter_values(params: &[(String, String)], name: &str) -> Vec<String> {
    let Some(index) = params.iter().find_map(|(k, v)| {
        (k.starts_with("Filter.") && k.ends_with(".Name") && v == name)
            .then(|| k.trim_end_matches(".Name").to_string())
    }) else {
        return Vec::new();
    };
    let prefix = format!("{index}.Value.");
    params
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(_, v)| v.clone())
        .collect()
}

fn forward(moto: SocketAddr, params: &[(String, String)]) -> Option<String> {
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    query(moto, "ec2", &pairs).ok()
}

/// A form-encoded Query body as pairs.
fn form(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// A form value: `+` is a space, then `%XX` escapes.
fn decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_forms() {
        let params = form(b"Action=DescribeAvailabilityZones&Filter.1.Name=zone-type&Filter.1.Value.1=availability-zone&Filter.2.Name=state&Filter.2.Value.1=available");
        assert_eq!(filter_values(&params, "zone-type"), ["availability-zone"]);
        assert_eq!(filter_values(&params, "state"), ["available"]);
        assert!(filter_values(&params, "instance-type").is_empty());
        assert_eq!(region_of("us-west-2a"), "us-west-2");
        assert_eq!(
            insert_before("<a><s/></a>", "</s>", "<item/>"),
            "<a><s><item/></s></a>"
        );
    }
}
