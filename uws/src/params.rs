//! DALI parameter lists: names are case-insensitive, values are not, and a name may repeat.
//!
//! GET query strings and POST form bodies decode to the same [`Parameters`]; the UWS control
//! parameters (`PHASE`, `WAIT`, …) and the service's own parameters are then read from it.

/// Parameters in the order the client sent them, names upper-cased.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parameters(Vec<(String, String)>);

impl Parameters {
    pub fn new() -> Parameters {
        Parameters(Vec::new())
    }

    pub fn push(&mut self, name: &str, value: &str) {
        self.0.push((name.to_ascii_uppercase(), value.to_owned()));
    }

    /// Every value of a parameter (names compare case-insensitively).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a parameter.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.first(name).is_some()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The parameters without those named (used to drop the UWS control parameters before the
    /// rest is stored as the job's parameters).
    pub fn without(&self, names: &[&str]) -> Parameters {
        Parameters(
            self.0
                .iter()
                .filter(|(n, _)| !names.iter().any(|c| c.eq_ignore_ascii_case(n)))
                .cloned()
                .collect(),
        )
    }

    /// Only the parameters named (any case), in the order sent: what a service keeps of a
    /// request, since DALI lets it ignore the parameters it does not define.
    pub fn only(&self, names: &[&str]) -> Parameters {
        Parameters(
            self.0
                .iter()
                .filter(|(n, _)| names.iter().any(|c| c.eq_ignore_ascii_case(n)))
                .cloned()
                .collect(),
        )
    }

    pub fn into_vec(self) -> Vec<(String, String)> {
        self.0
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for Parameters {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(iter: I) -> Self {
        let mut p = Parameters::new();
        for (n, v) in iter {
            p.push(n, v);
        }
        p
    }
}

impl From<Vec<(String, String)>> for Parameters {
    fn from(v: Vec<(String, String)>) -> Self {
        v.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keeps_the_named_parameters_in_order_whatever_their_case() {
        let p: Parameters = [
            ("id", "a"),
            ("RESPONSEFORMAT", "x"),
            ("Id", "b"),
            ("PHASE", "RUN"),
        ]
        .into_iter()
        .collect();
        let kept = p.only(&["ID", "responseformat"]);
        assert_eq!(
            kept.iter().collect::<Vec<_>>(),
            [("ID", "a"), ("RESPONSEFORMAT", "x"), ("ID", "b")]
        );
        assert!(p.only(&[]).is_empty());
    }

    #[test]
    fn names_are_case_insensitive_and_values_are_kept() {
        let p: Parameters = [
            ("id", "butler://a/B"),
            ("Circle", "1 2 3"),
            ("CIRCLE", "4 5 6"),
        ]
        .into_iter()
        .collect();
        assert_eq!(p.first("ID"), Some("butler://a/B"));
        assert_eq!(p.all("circle").collect::<Vec<_>>(), ["1 2 3", "4 5 6"]);
        assert!(!p.contains("POLYGON"));
    }

    #[test]
    fn without_drops_control_parameters() {
        let p: Parameters = [("phase", "RUN"), ("ID", "x"), ("RunId", "r")]
            .into_iter()
            .collect();
        let rest = p.without(&["PHASE", "RUNID"]);
        assert_eq!(rest.iter().collect::<Vec<_>>(), [("ID", "x")]);
    }

    #[test]
    fn a_list_counts_keeps_order_and_converts_both_ways() {
        let empty = Parameters::new();
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert_eq!(empty.first("X"), None);
        let mut p = Parameters::new();
        p.push("circle", "1 2 3");
        p.push("Id", "a");
        p.push("CIRCLE", "4 5 6");
        assert!(!p.is_empty());
        assert_eq!(p.len(), 3);
        assert!(p.contains("id") && p.contains("ID"));
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            [("CIRCLE", "1 2 3"), ("ID", "a"), ("CIRCLE", "4 5 6")]
        );
        let pairs = p.clone().into_vec();
        assert_eq!(pairs[1], ("ID".to_owned(), "a".to_owned()));
        let back = Parameters::from(vec![("circle".to_owned(), "1 2 3".to_owned())]);
        assert_eq!(back.iter().collect::<Vec<_>>(), [("CIRCLE", "1 2 3")]);
        assert_eq!(p.without(&[]), p);
        assert!(p.without(&["circle", "id"]).is_empty());
    }
}
