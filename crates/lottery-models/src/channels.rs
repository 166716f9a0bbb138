//! Channel structure of the batch-norm conv nets (VGG-BN): which weights each batch-norm channel
//! gates, the physically smaller network that keeps only some channels, and what a network costs.

use crate::channel_masks::{ChannelGroup, ChannelKeep, Gate, NetworkCost};
use lottery_core::config::BiasLayout;
use lottery_core::{FlatTensor, ParamValues};

use crate::arch::{Architecture, InputShape, Plan};

/// Why a channel operation does not apply.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The architecture has no batch-norm channels to prune.
    #[error("channel pruning needs a conv net with batch norm (VGG-BN); this network is {0}")]
    Unsupported(String),
    /// A channel mask or a value does not fit the network.
    #[error("{0}")]
    Mismatch(String),
}

/// One convolution of a [`Plan`], with its PyTorch name prefix and input size.
#[derive(Debug, Clone)]
struct ConvSite {
    prefix: String,
    c_out: usize,
    height: usize,
    width: usize,
}

/// The convolutions of a conv-net plan in forward order, and the spatial size after the last one
/// (and its pools).
fn conv_sites(plan: &[Plan], input: InputShape) -> (Vec<ConvSite>, usize, usize) {
    let (mut h, mut w) = (input.height, input.width);
    let mut sites = vec![];
    for (i, p) in plan.iter().enumerate() {
        match *p {
            Plan::Conv(c) => sites.push(ConvSite {
                prefix: format!("layers.{i}"),
                c_out: c,
                height: h,
                width: w,
            }),
            Plan::Pool => {
                h /= 2;
                w /= 2;
            }
        }
    }
    (sites, h, w)
}

fn parts(arch: &Architecture) -> Result<(&[Plan], &[usize], bool), ChannelError> {
    match arch {
        Architecture::ConvNet {
            plan,
            hidden,
            batch_norm: true,
            global_pool,
        } => Ok((plan, hidden, *global_pool)),
        other => Err(ChannelError::Unsupported(format!("{other:?}"))),
    }
}

/// Name of the first fully connected weight after the convolutions.
fn first_fc(hidden: &[usize]) -> String {
    if hidden.is_empty() {
        "fc.weight".into()
    } else {
        "fc_layers.0.weight".into()
    }
}

/// The batch-norm channel groups of `arch`: each convolution's output channels gate its own weight
/// rows and the next layer's input slices (the first linear layer's columns after the last one).
pub fn channel_groups(
    arch: &Architecture,
    input: InputShape,
) -> Result<Vec<ChannelGroup>, ChannelError> {
    let (plan, hidden, global_pool) = parts(arch)?;
    let (sites, h, w) = conv_sites(plan, input);
    let mut groups = vec![];
    for (j, s) in sites.iter().enumerate() {
        let consumer = match sites.get(j + 1) {
            Some(next) => Gate {
                param: format!("{}.conv.weight", next.prefix),
                axis: 1,
                block: 1,
            },
            None => Gate {
                param: first_fc(hidden),
                axis: 1,
                block: if global_pool { 1 } else { h * w },
            },
        };
        groups.push(ChannelGroup {
            scale: format!("{}.bn.weight", s.prefix),
            channels: s.c_out,
            gates: vec![
                Gate {
                    param: format!("{}.conv.weight", s.prefix),
                    axis: 0,
                    block: 1,
                },
                consumer,
            ],
        });
    }
    Ok(groups)
}

/// Kept channel indices of each convolution, in forward order.
fn kept_indices(sites: &[ConvSite], keep: &ChannelKeep) -> Result<Vec<Vec<usize>>, ChannelError> {
    sites
        .iter()
        .map(|s| {
            let scale = format!("{}.bn.weight", s.prefix);
            let k = keep
                .get(&scale)
                .ok_or_else(|| ChannelError::Mismatch(format!("no channel mask for {scale}")))?;
            if k.len() != s.c_out {
                return Err(ChannelError::Mismatch(format!(
                    "{scale}: {} flags for {} channels",
                    k.len(),
                    s.c_out
                )));
            }
            let idx: Vec<usize> = (0..k.len()).filter(|&c| k[c]).collect();
            if idx.is_empty() {
                return Err(ChannelError::Mismatch(format!(
                    "{scale}: every channel pruned, the network would be cut"
                )));
            }
            Ok(idx)
        })
        .collect()
}

/// The architecture that keeps only the `keep` channels (the same plan, narrower convolutions).
pub fn shrink_architecture(
    arch: &Architecture,
    input: InputShape,
    keep: &ChannelKeep,
) -> Result<Architecture, ChannelError> {
    let (plan, hidden, global_pool) = parts(arch)?;
    let (sites, _, _) = conv_sites(plan, input);
    let kept = kept_indices(&sites, keep)?;
    let mut widths = kept.iter().map(Vec::len);
    let plan = plan
        .iter()
        .map(|p| match p {
            Plan::Conv(_) => Plan::Conv(widths.next().expect("one width per conv")),
            Plan::Pool => Plan::Pool,
        })
        .collect();
    Ok(Architecture::ConvNet {
        plan,
        hidden: hidden.to_vec(),
        batch_norm: true,
        global_pool,
    })
}

/// Flat offsets of the `rows` (along axis 0) × `cols` (along axis 1, channel blocks of `block`)
/// entries of a tensor of `shape`, each the start of a contiguous run of the returned length.
fn positions(
    shape: &[usize],
    rows: Option<&[usize]>,
    cols: Option<(&[usize], usize)>,
) -> (Vec<usize>, usize) {
    let inner: usize = shape[2.min(shape.len())..].iter().product();
    let n_cols = if shape.len() > 1 { shape[1] } else { 1 };
    let row_idx: Vec<usize> = rows.map_or_else(|| (0..shape[0]).collect(), <[usize]>::to_vec);
    let col_idx: Vec<usize> = match cols {
        Some((channels, block)) => channels
            .iter()
            .flat_map(|&c| c * block..(c + 1) * block)
            .collect(),
        None => (0..n_cols).collect(),
    };
    let starts = row_idx
        .iter()
        .flat_map(|&r| col_idx.iter().map(move |&c| (r * n_cols + c) * inner))
        .collect();
    (starts, inner)
}

/// Picks the `rows` and `cols` of a tensor (see [`positions`]).
fn select(t: &FlatTensor, rows: Option<&[usize]>, cols: Option<(&[usize], usize)>) -> FlatTensor {
    let (starts, inner) = positions(&t.shape, rows, cols);
    let mut values = Vec::with_capacity(starts.len() * inner);
    for at in starts {
        values.extend_from_slice(&t.values[at..at + inner]);
    }
    let mut shape = t.shape.clone();
    if let Some(r) = rows {
        shape[0] = r.len();
    }
    if let Some((channels, block)) = cols {
        shape[1] = channels.len() * block;
    }
    FlatTensor::new(shape, values)
}

/// Writes `small` into the `rows` × `cols` positions of `full` (the inverse of [`select`]).
fn scatter(
    full: &mut FlatTensor,
    small: &FlatTensor,
    rows: Option<&[usize]>,
    cols: Option<(&[usize], usize)>,
) {
    let (starts, inner) = positions(&full.shape, rows, cols);
    for (k, at) in starts.into_iter().enumerate() {
        full.values[at..at + inner].copy_from_slice(&small.values[k * inner..(k + 1) * inner]);
    }
}

/// For each parameter name, the rows and column blocks a channel selection keeps.
type Selection = Vec<(String, Option<Vec<usize>>, Option<(Vec<usize>, usize)>)>;

fn selection(
    arch: &Architecture,
    input: InputShape,
    keep: &ChannelKeep,
    names: impl Iterator<Item = String>,
) -> Result<Selection, ChannelError> {
    let (plan, hidden, global_pool) = parts(arch)?;
    let (sites, h, w) = conv_sites(plan, input);
    let kept = kept_indices(&sites, keep)?;
    let fc = first_fc(hidden);
    let block = if global_pool { 1 } else { h * w };
    let mut out = vec![];
    for name in names {
        let site = sites
            .iter()
            .position(|s| name.starts_with(&format!("{}.", s.prefix)));
        let (rows, cols) = match site {
            Some(j) if name.ends_with(".conv.weight") => (
                Some(kept[j].clone()),
                (j > 0).then(|| (kept[j - 1].clone(), 1)),
            ),
            Some(j) => (Some(kept[j].clone()), None),
            None if name == fc => (None, Some((kept[kept.len() - 1].clone(), block))),
            None => (None, None),
        };
        out.push((name, rows, cols));
    }
    Ok(out)
}

/// The values of the physically smaller network: every parameter and buffer of `values` (the
/// full network's, PyTorch names) restricted to the kept channels.
pub fn shrink_values(
    arch: &Architecture,
    input: InputShape,
    keep: &ChannelKeep,
    values: &ParamValues,
) -> Result<ParamValues, ChannelError> {
    let sel = selection(arch, input, keep, values.keys().cloned())?;
    Ok(sel
        .into_iter()
        .map(|(name, rows, cols)| {
            let t = select(
                &values[&name],
                rows.as_deref(),
                cols.as_ref().map(|(c, b)| (c.as_slice(), *b)),
            );
            (name, t)
        })
        .collect())
}

/// The values of the smaller network placed at their positions in the full network; entries of
/// pruned channels come from `background` (the full network's values).
pub fn embed_values(
    arch: &Architecture,
    input: InputShape,
    keep: &ChannelKeep,
    small: &ParamValues,
    background: &ParamValues,
) -> Result<ParamValues, ChannelError> {
    let sel = selection(arch, input, keep, small.keys().cloned())?;
    let mut out = background.clone();
    for (name, rows, cols) in sel {
        let full = out
            .get_mut(&name)
            .ok_or_else(|| ChannelError::Mismatch(format!("no parameter {name}")))?;
        scatter(
            full,
            &small[&name],
            rows.as_deref(),
            cols.as_ref().map(|(c, b)| (c.as_slice(), *b)),
        );
    }
    Ok(out)
}

/// Trainable parameters and forward FLOPs (convolutions and linear layers, a multiply-add counting
/// 2) of one example through a conv net.
pub fn cost(
    arch: &Architecture,
    input: InputShape,
    classes: usize,
    bias: BiasLayout,
) -> Result<NetworkCost, ChannelError> {
    let Architecture::ConvNet {
        plan,
        hidden,
        batch_norm,
        global_pool,
    } = arch
    else {
        return Err(ChannelError::Unsupported(format!("{arch:?}")));
    };
    let (sites, h, w) = conv_sites(plan, input);
    let mut params = 0u64;
    let mut flops = 0u64;
    let mut c_in = input.channels;
    for s in &sites {
        let weights = (c_in * s.c_out * 9) as u64;
        params += weights;
        if bias.convolutions() {
            params += s.c_out as u64;
        }
        if *batch_norm {
            params += 2 * s.c_out as u64;
        }
        flops += 2 * weights * (s.height * s.width) as u64;
        c_in = s.c_out;
    }
    let mut d = if *global_pool { c_in } else { c_in * h * w };
    for &n in hidden.iter().chain(std::iter::once(&classes)) {
        params += (d * n) as u64;
        if bias.linear() {
            params += n as u64;
        }
        flops += 2 * (d * n) as u64;
        d = n;
    }
    Ok(NetworkCost { params, flops })
}
