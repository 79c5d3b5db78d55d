//! Content negotiation: which representation a request's Accept header asks for (plain JSON, a server-side
//! `Table`, `PartialObjectMetadata`, aggregated discovery v2). Everything is answered as JSON: a protobuf-first
//! Accept gets JSON rather than 406, as the aggregator and client-go expect. Pure functions.

/// One media range of an Accept header, with its parameters.
#[derive(Debug, PartialEq, Eq)]
struct MediaRange {
    essence: String,
    params: Vec<(String, String)>,
}

impl MediaRange {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Whether JSON satisfies the range's type (`application/json`, `application/*`, `*/*`).
    fn takes_json(&self) -> bool {
        matches!(self.essence.as_str(), "application/json" | "application/*" | "*/*")
    }
}

fn media_ranges(accept: &str) -> Vec<MediaRange> {
    accept
        .split(',')
        .filter_map(|range| {
            let mut parts = range.split(';');
            let essence = parts.next()?.trim().to_ascii_lowercase();
            if essence.is_empty() {
                return None;
            }
            let params = parts
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_string()))
                .collect();
            Some(MediaRange { essence, params })
        })
        .collect()
}

/// What a resource request is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Representation {
    /// The objects themselves (and `<Kind>List` for a list).
    Json,
    /// `meta.k8s.io/<version>` Table, as `kubectl get` asks.
    Table { version: &'static str },
    /// `meta.k8s.io/<version>` PartialObjectMetadata(List), as metadata-only clients ask.
    Metadata { version: &'static str },
}

fn meta_version(range: &MediaRange) -> Option<&'static str> {
    if range.param("g") != Some("meta.k8s.io") {
        return None;
    }
    match range.param("v") {
        Some("v1") => Some("v1"),
        Some("v1beta1") => Some("v1beta1"),
        _ => None,
    }
}

/// The first representation in the Accept header that this server offers; plain JSON when none is (never 406).
pub fn representation(accept: Option<&str>) -> Representation {
    for range in media_ranges(accept.unwrap_or("")) {
        if !range.takes_json() {
            continue;
        }
        match range.param("as") {
            None => return Representation::Json,
            Some("Table") => {
                if let Some(version) = meta_version(&range) {
                    return Representation::Table { version };
                }
            }
            Some("PartialObjectMetadata" | "PartialObjectMetadataList") => {
                if let Some(version) = meta_version(&range) {
                    return Representation::Metadata { version };
                }
            }
            Some(_) => {}
        }
    }
    Representation::Json
}

/// The aggregated discovery version (`v2` or `v2beta1`) asked for at `/apis`, if any.
pub fn discovery_version(accept: Option<&str>) -> Option<&'static str> {
    media_ranges(accept.unwrap_or("")).into_iter().find_map(|range| {
        let asked = range.takes_json()
            && range.param("g") == Some("apidiscovery.k8s.io")
            && range.param("as") == Some("APIGroupDiscoveryList");
        match (asked, range.param("v")) {
            (true, Some("v2")) => Some("v2"),
            (true, Some("v2beta1")) => Some("v2beta1"),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_representations() {
        let cases = [
            (None, Representation::Json),
            (Some(""), Representation::Json),
            (Some("application/json"), Representation::Json),
            (Some("*/*"), Representation::Json),
            // kubectl get
            (
                Some(
                    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
                ),
                Representation::Table { version: "v1" },
            ),
            (
                Some("application/json; as=Table; g=meta.k8s.io; v=v1beta1"),
                Representation::Table { version: "v1beta1" },
            ),
            // client-go's default: protobuf first, never 406.
            (
                Some("application/vnd.kubernetes.protobuf, application/json"),
                Representation::Json,
            ),
            (Some("application/vnd.kubernetes.protobuf"), Representation::Json),
            (
                Some("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json"),
                Representation::Json,
            ),
            (
                Some("application/json;as=Table;v=v2;g=meta.k8s.io"),
                Representation::Json,
            ),
            (
                Some("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json"),
                Representation::Metadata { version: "v1" },
            ),
        ];
        for (accept, want) in cases {
            assert_eq!(representation(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn discovery_versions() {
        let aggregator = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
        let cases = [
            (Some(aggregator), Some("v2")),
            (
                Some("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"),
                Some("v2beta1"),
            ),
            (Some("application/json"), None),
            (None, None),
            (
                Some("application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"),
                None,
            ),
        ];
        for (accept, want) in cases {
            assert_eq!(discovery_version(accept), want, "{accept:?}");
        }
    }
}
