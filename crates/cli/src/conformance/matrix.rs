//! The 9-pod reachability model of the NetworkPolicy cases: pods a, b, c
//! in namespaces x, y, z, and 9×9 matrices of "from can reach to".

use std::fmt;

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const POD_NAMES: [&str; 3] = ["a", "b", "c"];
/// Pods in the model; also the matrix size.
pub const N: usize = 9;

/// A pod of the model, in matrix order: x/a x/b x/c y/a … z/c.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodId(usize);

impl PodId {
    pub fn all() -> impl Iterator<Item = PodId> {
        (0..N).map(PodId)
    }

    pub fn index(self) -> usize {
        self.0
    }

    pub fn namespace(self) -> &'static str {
        NAMESPACES[self.0 / 3]
    }

    pub fn name(self) -> &'static str {
        POD_NAMES[self.0 % 3]
    }

    /// `x/a` → the pod; anything else is not part of the model.
    pub fn parse(s: &str) -> Option<PodId> {
        let (ns, name) = s.split_once('/')?;
        let n = NAMESPACES.iter().position(|x| *x == ns)?;
        let p = POD_NAMES.iter().position(|x| *x == name)?;
        Some(PodId(n * 3 + p))
    }
}

impl fmt::Display for PodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace(), self.name())
    }
}

/// Who can reach whom: `allowed[from][to]`. The diagonal (a pod through its
/// own Service) is carried but never compared: upstream does not check it
/// (ignoreLoopback, kubernetes issue 95879) and dataplanes differ there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matrix {
    allowed: [[bool; N]; N],
}

impl Default for Matrix {
    /// Everything allowed: where every upstream expectation starts.
    fn default() -> Self {
        Self {
            allowed: [[true; N]; N],
        }
    }
}

impl Matrix {
    pub fn get(&self, from: PodId, to: PodId) -> bool {
        self.allowed[from.0][to.0]
    }

    pub fn set(&mut self, from: PodId, to: PodId, allowed: bool) {
        self.allowed[from.0][to.0] = allowed;
    }

    /// Parses the case format: one row per pod, each exactly once, `to`
    /// being 9 cells of `.` (allowed) or `X` (blocked) in column order.
    pub fn parse<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Matrix, String> {
        let mut m = Matrix::default();
        let mut seen = [false; N];
        for (from, to) in rows {
            let p = PodId::parse(from)
                .ok_or_else(|| format!("row {from:?} is not a pod of the model (x/a … z/c)"))?;
            if std::mem::replace(&mut seen[p.0], true) {
                return Err(format!("row {from} appears twice"));
            }
            let cells: Vec<char> = to.chars().collect();
            if cells.len() != N {
                return Err(format!(
                    "row {from}: {to:?} has {} cells, expected {N}",
                    cells.len()
                ));
            }
            for (i, c) in cells.into_iter().enumerate() {
                let allowed = match c {
                    '.' => true,
                    'X' => false,
                    other => {
                        return Err(format!(
                            "row {from}: cell {} is {other:?}, expected '.' or 'X'",
                            PodId(i)
                        ))
                    }
                };
                m.allowed[p.0][i] = allowed;
            }
        }
        if let Some(missing) = PodId::all().find(|p| !seen[p.0]) {
            return Err(format!("no row for {missing}"));
        }
        Ok(m)
    }

    /// Cells that differ, the diagonal excepted.
    pub fn mismatches(&self, other: &Matrix) -> Vec<(PodId, PodId)> {
        let mut out = Vec::new();
        for from in PodId::all() {
            for to in PodId::all() {
                if from != to && self.get(from, to) != other.get(from, to) {
                    out.push((from, to));
                }
            }
        }
        out
    }

    /// The row of `from` in the case format, `-` on the diagonal.
    pub fn row(&self, from: PodId) -> String {
        PodId::all()
            .map(|to| cell(self, from, to))
            .collect::<String>()
    }
}

fn cell(m: &Matrix, from: PodId, to: PodId) -> char {
    if from == to {
        '-'
    } else if m.get(from, to) {
        '.'
    } else {
        'X'
    }
}

/// Expected and observed side by side, rows = from, columns = to; observed
/// cells that differ are bracketed.
pub fn side_by_side(expected: &Matrix, observed: &Matrix, left: &str, right: &str) -> String {
    const CELL: usize = 4;
    let width = N * CELL;
    let header: String = PodId::all()
        .map(|p| format!("{:<CELL$}", p.to_string()))
        .collect();
    let mut out = String::new();
    out.push_str(&format!("      {left:<width$}    {right}\n"));
    out.push_str(&format!("      {header}    {}\n", header.trim_end()));
    for from in PodId::all() {
        let mut l = String::new();
        let mut r = String::new();
        for to in PodId::all() {
            let e = cell(expected, from, to);
            let o = cell(observed, from, to);
            l.push_str(&format!(" {e}  "));
            if from != to && e != o {
                r.push_str(&format!("[{o}] "));
            } else {
                r.push_str(&format!(" {o}  "));
            }
        }
        out.push_str(&format!(
            "{:<5} {l}    {}\n",
            from.to_string(),
            r.trim_end()
        ));
    }
    out.push_str(
        "      '.' connects   'X' blocked   '-' pod to itself, not checked   [ ] differs\n",
    );
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rows(to: [&'static str; N]) -> Vec<(&'static str, &'static str)> {
        [
            "x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c",
        ]
        .into_iter()
        .zip(to)
        .collect()
    }

    #[test]
    fn pods_are_in_matrix_order() {
        let names: Vec<String> = PodId::all().map(|p| p.to_string()).collect();
        assert_eq!(names[0], "x/a");
        assert_eq!(names[4], "y/b");
        assert_eq!(names[8], "z/c");
        assert_eq!(PodId::parse("z/b").map(PodId::index), Some(7));
        assert_eq!(PodId::parse("w/a"), None);
        assert_eq!(PodId::parse("x/d"), None);
        assert_eq!(PodId::parse("xa"), None);
    }

    #[test]
    fn parses_and_compares_without_the_diagonal() {
        let mut to = ["........."; N];
        to[0] = "XXX......";
        let m = Matrix::parse(rows(to)).unwrap();
        let xa = PodId::parse("x/a").unwrap();
        let xb = PodId::parse("x/b").unwrap();
        assert!(!m.get(xa, xb));
        assert!(m.get(xb, xa));
        assert_eq!(m.row(xa), "-XX......");

        let all = Matrix::default();
        assert_eq!(m.mismatches(&all), vec![(xa, xb), (xa, PodId(2))]);
        // Only the diagonal differs: equal for the comparison.
        let mut diag = all;
        diag.set(xa, xa, false);
        assert!(diag.mismatches(&all).is_empty());
    }

    #[test]
    fn rejects_malformed_matrices() {
        let mut to = ["........."; N];
        to[3] = "........";
        assert!(Matrix::parse(rows(to)).is_err_and(|e| e.contains("8 cells")));
        to[3] = "....o....";
        assert!(Matrix::parse(rows(to)).is_err_and(|e| e.contains("'o'")));
        let mut r = rows(["........."; N]);
        r[8].0 = "x/a";
        assert!(Matrix::parse(r.clone()).is_err_and(|e| e.contains("twice")));
        r.pop();
        assert!(Matrix::parse(r).is_err_and(|e| e.contains("no row for z/c")));
    }

    #[test]
    fn side_by_side_marks_differences() {
        let mut expected = Matrix::default();
        let xa = PodId(0);
        let yb = PodId(4);
        expected.set(yb, xa, false);
        let text = side_by_side(&expected, &Matrix::default(), "expected", "observed");
        let line = text.lines().find(|l| l.starts_with("y/b")).unwrap();
        assert!(line.contains(" X "), "{text}");
        assert!(line.contains("[.]"), "{text}");
        assert_eq!(
            text.matches('[').count(),
            2,
            "one marked cell + legend: {text}"
        );
    }
}
