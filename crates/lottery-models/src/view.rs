//! The named-parameter view of a burn module: PyTorch names and layouts for reading and writing
//! values, and masks applied to weights (and gradients) in place.
//!
//! burn paths become PyTorch names by [`torch_name`]: the enum variant is dropped, a batch norm's
//! `gamma`/`beta` become `weight`/`bias`, `Vec` indices of `nn.Sequential`-like stacks are mapped to
//! PyTorch's (which count parameter-free layers), and a linear weight is transposed (burn stores
//! `[in, out]`, PyTorch `[out, in]`). Every conversion in the project goes through this file, so a
//! square layer's mask can never load transposed.

use std::collections::{BTreeMap, HashMap};

use burn::module::{ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use burn::tensor::{TensorData, TensorPrimitive};
use lottery_core::readback::{HostElement, host_values};
use lottery_core::{FlatTensor, MaskSet, ParamInfo, ParamKind, ParamValues};

/// Where a parameter sits, as the visitor sees it.
#[derive(Debug, Clone)]
struct Site {
    burn_path: String,
    container: String,
    field: String,
}

/// Tracks the module path during a visit or map.
#[derive(Default)]
struct PathStack {
    names: Vec<String>,
    containers: Vec<String>,
}

impl PathStack {
    fn enter(&mut self, name: &str, container: &str) {
        self.names.push(name.to_string());
        self.containers.push(container.to_string());
    }
    fn exit(&mut self) {
        self.names.pop();
        self.containers.pop();
    }
    /// The site of the tensor just entered (the last name is the parameter's field).
    fn site(&self) -> Site {
        let n = self.containers.len();
        Site {
            burn_path: self.names.join("."),
            // A field is entered with the type of the struct that holds it.
            container: if n >= 1 {
                self.containers[n - 1].clone()
            } else {
                String::new()
            },
            field: self.names.last().cloned().unwrap_or_default(),
        }
    }
}

/// Maps a burn path to the PyTorch name, given how the model names its `nn.Sequential` entries.
pub fn torch_name(burn_path: &str, seq_index: &dyn Fn(&str, usize) -> Option<usize>) -> String {
    let mut parts: Vec<String> = burn_path.split('.').map(str::to_string).collect();
    // Drop the ImageModel variant.
    if parts
        .first()
        .is_some_and(|p| p.chars().next().is_some_and(char::is_uppercase))
    {
        parts.remove(0);
    }
    for i in 0..parts.len() {
        if let Ok(idx) = parts[i].parse::<usize>()
            && i > 0
            && let Some(mapped) = seq_index(&parts[i - 1], idx)
        {
            parts[i] = mapped.to_string();
        }
    }
    let joined = parts.join(".");
    let joined = joined
        .replace("shortcut.conv.", "shortcut.0.")
        .replace("shortcut.bn.", "shortcut.1.");
    if let Some(base) = joined.strip_suffix(".gamma") {
        return format!("{base}.weight");
    }
    if let Some(base) = joined.strip_suffix(".beta") {
        return format!("{base}.bias");
    }
    joined
}

fn kind_of(site: &Site) -> ParamKind {
    let c = site.container.as_str();
    match (c, site.field.as_str()) {
        (_, "running_mean" | "running_var") => ParamKind::NormStatistic,
        (_, "gamma" | "beta") => ParamKind::Norm,
        (_, "bias") => ParamKind::Bias,
        (c, "weight") if c.ends_with("Conv2d") || c.ends_with("Conv1d") => ParamKind::ConvWeight,
        (c, "weight") if c.ends_with("Linear") => ParamKind::LinearWeight,
        (c, "weight") if c.ends_with("Embedding") => ParamKind::Embedding,
        (c, "weight") if c.contains("Norm") => ParamKind::Norm,
        _ => ParamKind::Other,
    }
}

/// One parameter as the view sees it.
#[derive(Debug, Clone)]
pub struct ViewEntry {
    /// Name, shape, kind.
    pub info: ParamInfo,
    /// burn's path.
    pub burn_path: String,
    /// burn's id of the parameter.
    pub id: ParamId,
    /// Whether the burn tensor is the transpose of the PyTorch one (linear weights).
    pub transposed: bool,
}

/// Something with a PyTorch naming of its `nn.Sequential` stacks.
pub trait TorchNaming {
    /// For a `Vec` field `field`, the PyTorch index of burn's entry `index` (None: same index).
    fn seq_index(&self, field: &str, index: usize) -> Option<usize>;
}

struct Collect<'a, B: Backend> {
    stack: PathStack,
    naming: &'a dyn TorchNaming,
    entries: Vec<ViewEntry>,
    values: Option<(&'a [String], ParamValues)>,
    _b: std::marker::PhantomData<B>,
}

impl<B: Backend> ModuleVisitor<B> for Collect<'_, B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let site = self.stack.site();
        let name = torch_name(&site.burn_path, &|f, i| self.naming.seq_index(f, i));
        let kind = kind_of(&site);
        let tensor = param.val();
        let dims = tensor.dims().to_vec();
        let transposed = kind == ParamKind::LinearWeight && D == 2;
        let shape = if transposed {
            vec![dims[1], dims[0]]
        } else {
            dims.clone()
        };
        let shortcut = site.burn_path.contains("shortcut");
        if let Some((wanted, out)) = &mut self.values
            && wanted.contains(&name)
        {
            let data: Vec<f32> = host_values(tensor);
            let values = if transposed {
                transpose(&data, dims[0], dims[1])
            } else {
                data
            };
            out.insert(name.clone(), FlatTensor::new(shape.clone(), values));
        }
        self.entries.push(ViewEntry {
            info: ParamInfo {
                name,
                shape,
                kind,
                shortcut,
            },
            burn_path: site.burn_path,
            id: param.id,
            transposed,
        });
    }
}

fn transpose<T: Copy + Default>(data: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = vec![T::default(); data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// All parameters of `module`, in visiting order.
pub fn entries<B: Backend, M: Module<B>>(module: &M, naming: &dyn TorchNaming) -> Vec<ViewEntry> {
    let mut v = Collect::<B> {
        stack: PathStack::default(),
        naming,
        entries: vec![],
        values: None,
        _b: Default::default(),
    };
    module.visit(&mut v);
    v.entries
}

/// Values of the named parameters in PyTorch layout.
pub fn values<B: Backend, M: Module<B>>(
    module: &M,
    naming: &dyn TorchNaming,
    names: &[String],
) -> ParamValues {
    let mut v = Collect::<B> {
        stack: PathStack::default(),
        naming,
        entries: vec![],
        values: Some((names, BTreeMap::new())),
        _b: Default::default(),
    };
    module.visit(&mut v);
    v.values.map(|(_, m)| m).unwrap_or_default()
}

/// Error from writing values into a module.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The value's shape is not the parameter's.
    #[error("parameter `{name}`: shape {given:?} given, the model has {expected:?}")]
    Shape {
        /// Parameter.
        name: String,
        /// Given shape (PyTorch layout).
        given: Vec<usize>,
        /// Expected shape (PyTorch layout).
        expected: Vec<usize>,
    },
    /// Names that the model does not have.
    #[error("the model has no parameter named {0:?}")]
    Unknown(Vec<String>),
}

struct Assign<'a, B: Backend> {
    stack: PathStack,
    naming: &'a dyn TorchNaming,
    values: &'a ParamValues,
    used: Vec<String>,
    error: Option<ViewError>,
    _b: std::marker::PhantomData<B>,
}

impl<B: Backend> ModuleMapper<B> for Assign<'_, B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let site = self.stack.site();
        let name = torch_name(&site.burn_path, &|f, i| self.naming.seq_index(f, i));
        let Some(v) = self.values.get(&name) else {
            return param;
        };
        self.used.push(name.clone());
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims().to_vec();
        let transposed = kind_of(&site) == ParamKind::LinearWeight && D == 2;
        let expected = if transposed {
            vec![dims[1], dims[0]]
        } else {
            dims.clone()
        };
        if v.shape != expected {
            self.error.get_or_insert(ViewError::Shape {
                name,
                given: v.shape.clone(),
                expected,
            });
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let data = if transposed {
            transpose(&v.values, expected[0], expected[1])
        } else {
            v.values.clone()
        };
        let require_grad = tensor.is_require_grad();
        let mut new = Tensor::<B, D>::from_data(TensorData::new(data, dims), &tensor.device());
        if require_grad {
            new = new.require_grad();
        }
        Param::from_mapped_value(id, new, mapper)
    }
}

/// Overwrites the named parameters with `values` (PyTorch layout). Unknown names and shape
/// mismatches are errors; nothing is changed then.
pub fn set_values<B: Backend, M: Module<B>>(
    module: M,
    naming: &dyn TorchNaming,
    values: &ParamValues,
) -> Result<M, ViewError> {
    let known: Vec<String> = entries::<B, M>(&module, naming)
        .into_iter()
        .map(|e| e.info.name)
        .collect();
    let unknown: Vec<String> = values
        .keys()
        .filter(|k| !known.contains(k))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(ViewError::Unknown(unknown));
    }
    let mut a = Assign::<B> {
        stack: PathStack::default(),
        naming,
        values,
        used: vec![],
        error: None,
        _b: Default::default(),
    };
    let out = module.map(&mut a);
    match a.error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// `data` (PyTorch layout, the shape of `entry`) as a tensor of `entry`'s burn layout, stored as
/// `dtype`.
fn upload<B: Backend>(
    entry: &ViewEntry,
    data: Vec<f32>,
    device: &B::Device,
    dtype: burn::tensor::DType,
) -> B::FloatTensorPrimitive {
    let shape = &entry.info.shape;
    let (data, shape) = if entry.transposed {
        (
            transpose(&data, shape[0], shape[1]),
            vec![shape[1], shape[0]],
        )
    } else {
        (data, shape.clone())
    };
    B::float_from_data(TensorData::new(data, shape).convert_dtype(dtype), device)
}

/// Data of `entry`'s parameter in burn's layout as a value in PyTorch's (linear weights transposed
/// back).
pub fn torch_layout(entry: &ViewEntry, data: Vec<f32>) -> FlatTensor {
    let shape = &entry.info.shape;
    let data = if entry.transposed {
        transpose(&data, shape[1], shape[0])
    } else {
        data
    };
    FlatTensor::new(shape.clone(), data)
}

/// Named values (PyTorch layout) as tensors in burn layout, stored as `dtype`, keyed by the ids of
/// the parameters in `entries`. A value whose shape is not its parameter's is an error.
pub fn device_values<B: Backend>(
    entries: &[ViewEntry],
    values: &ParamValues,
    device: &B::Device,
    dtype: burn::tensor::DType,
) -> Result<HashMap<ParamId, B::FloatTensorPrimitive>, ViewError> {
    let mut out = HashMap::new();
    for e in entries {
        if let Some(v) = values.get(&e.info.name) {
            if v.shape != e.info.shape {
                return Err(ViewError::Shape {
                    name: e.info.name.clone(),
                    given: v.shape.clone(),
                    expected: e.info.shape.clone(),
                });
            }
            out.insert(e.id, upload::<B>(e, v.values.clone(), device, dtype));
        }
    }
    Ok(out)
}

/// Masks as backend tensors in burn layout, keyed by parameter id, built once per mask set.
#[derive(Debug, Clone)]
pub struct DeviceMasks<B: Backend> {
    masks: HashMap<ParamId, B::FloatTensorPrimitive>,
}

impl<B: Backend> DeviceMasks<B> {
    /// Uploads `set` for `module`'s parameters.
    pub fn new<M: Module<B>>(
        module: &M,
        naming: &dyn TorchNaming,
        set: &MaskSet,
        device: &B::Device,
    ) -> Self {
        Self::from_entries(&entries::<B, M>(module, naming), set, device)
    }

    /// Uploads `set` for the parameters listed in `entries` (of a module on any backend whose
    /// parameter ids these are, e.g. the autodiff module whose inner backend is `B`).
    pub fn from_entries(entries: &[ViewEntry], set: &MaskSet, device: &B::Device) -> Self {
        Self::from_entries_as(entries, set, device, burn::tensor::DType::F32)
    }

    /// [`DeviceMasks::from_entries`] with masks stored as `dtype` (that of the weights they gate).
    pub fn from_entries_as(
        entries: &[ViewEntry],
        set: &MaskSet,
        device: &B::Device,
        dtype: burn::tensor::DType,
    ) -> Self {
        let masks = entries
            .iter()
            .filter_map(|e| {
                let m = set.get(&e.info.name)?;
                Some((e.id, upload::<B>(e, m.as_f32(), device, dtype)))
            })
            .collect();
        Self { masks }
    }

    /// Whether nothing is masked.
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }

    /// The mask of parameter `id`, as a tensor of rank `D`.
    pub fn get<const D: usize>(&self, id: &ParamId) -> Option<Tensor<B, D>> {
        self.masks
            .get(id)
            .map(|p| Tensor::from_primitive(TensorPrimitive::Float(p.clone())))
    }

    /// Multiplies every masked parameter of `module` by its mask (pruned weights become exactly 0).
    pub fn apply<M: Module<B>>(&self, module: M) -> M {
        if self.masks.is_empty() {
            return module;
        }
        let mut m = ApplyMask { masks: self };
        module.map(&mut m)
    }

    /// The same for a module on the autodiff backend over `B`: the product is taken on the inner
    /// tensors, so each masked parameter stays a leaf that requires its gradient.
    pub fn apply_autodiff<AB, M>(&self, module: M) -> M
    where
        AB: burn::tensor::backend::AutodiffBackend<InnerBackend = B>,
        M: Module<AB>,
    {
        if self.masks.is_empty() {
            return module;
        }
        map_inner_where::<AB, M>(module, &|id| self.masks.contains_key(id), &mut |id, t| {
            B::float_mul(t, self.masks[id].clone())
        })
    }
}

struct ApplyMask<'a, B: Backend> {
    masks: &'a DeviceMasks<B>,
}

impl<B: Backend> ModuleMapper<B> for ApplyMask<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(mask) = self.masks.get::<D>(&param.id) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let mut masked = tensor.detach().mul(mask);
        if require_grad {
            masked = masked.require_grad();
        }
        Param::from_mapped_value(id, masked, mapper)
    }
}

struct GradCollect<'a, B: burn::tensor::backend::AutodiffBackend, E> {
    stack: PathStack,
    naming: &'a dyn TorchNaming,
    grads: &'a burn::optim::GradientsParams,
    names: &'a [String],
    out: BTreeMap<String, (Vec<usize>, Vec<E>)>,
    _b: std::marker::PhantomData<B>,
}

/// Values in f64 (PyTorch layout): gradients of f64 computations, before any rounding.
pub type ParamValues64 = BTreeMap<String, (Vec<usize>, Vec<f64>)>;

/// Rounds f64 values to the f32 [`ParamValues`] the pruners exchange.
pub fn to_f32(values: ParamValues64) -> ParamValues {
    values
        .into_iter()
        .map(|(k, (shape, v))| {
            (
                k,
                FlatTensor::new(shape, v.into_iter().map(|x| x as f32).collect()),
            )
        })
        .collect()
}

impl<B: burn::tensor::backend::AutodiffBackend, E: HostElement + Default> ModuleVisitor<B>
    for GradCollect<'_, B, E>
{
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let site = self.stack.site();
        let name = torch_name(&site.burn_path, &|f, i| self.naming.seq_index(f, i));
        if !self.names.contains(&name) {
            return;
        }
        let dims = param.val().dims().to_vec();
        let transposed = kind_of(&site) == ParamKind::LinearWeight && D == 2;
        let data: Vec<E> = match self.grads.get::<B::InnerBackend, D>(param.id) {
            Some(g) => host_values(g),
            None => vec![E::default(); dims.iter().product()],
        };
        let (data, shape) = if transposed {
            (transpose(&data, dims[0], dims[1]), vec![dims[1], dims[0]])
        } else {
            (data, dims)
        };
        self.out.insert(name, (shape, data));
    }
}

/// Gradients of the named parameters in PyTorch layout (zeros where a parameter got none).
pub fn gradients<B: burn::tensor::backend::AutodiffBackend, M: Module<B>>(
    module: &M,
    naming: &dyn TorchNaming,
    grads: &burn::optim::GradientsParams,
    names: &[String],
) -> ParamValues {
    gradients_as::<B, M, f32>(module, naming, grads, names)
        .into_iter()
        .map(|(k, (shape, v))| (k, FlatTensor::new(shape, v)))
        .collect()
}

/// [`gradients`] without rounding to f32.
pub fn gradients_f64<B: burn::tensor::backend::AutodiffBackend, M: Module<B>>(
    module: &M,
    naming: &dyn TorchNaming,
    grads: &burn::optim::GradientsParams,
    names: &[String],
) -> ParamValues64 {
    gradients_as::<B, M, f64>(module, naming, grads, names)
}

fn gradients_as<B, M, E>(
    module: &M,
    naming: &dyn TorchNaming,
    grads: &burn::optim::GradientsParams,
    names: &[String],
) -> BTreeMap<String, (Vec<usize>, Vec<E>)>
where
    B: burn::tensor::backend::AutodiffBackend,
    M: Module<B>,
    E: HostElement + Default,
{
    let mut v = GradCollect::<B, E> {
        stack: PathStack::default(),
        naming,
        grads,
        names,
        out: BTreeMap::new(),
        _b: Default::default(),
    };
    module.visit(&mut v);
    v.out
}
/// Replaces every float tensor of `module` (parameters and batch-norm statistics) by `f(id, t)`,
/// computed on the inner backend; a parameter that required its gradient stays a leaf that does.
pub fn map_inner<AB, M>(
    module: M,
    f: &mut dyn FnMut(&ParamId, InnerFloat<AB>) -> InnerFloat<AB>,
) -> M
where
    AB: burn::tensor::backend::AutodiffBackend,
    M: Module<AB>,
{
    map_inner_where::<AB, M>(module, &|_| true, f)
}

/// [`map_inner`] for the tensors whose id `wanted` accepts; the others are left as they are.
pub fn map_inner_where<AB, M>(
    module: M,
    wanted: &dyn Fn(&ParamId) -> bool,
    f: &mut dyn FnMut(&ParamId, InnerFloat<AB>) -> InnerFloat<AB>,
) -> M
where
    AB: burn::tensor::backend::AutodiffBackend,
    M: Module<AB>,
{
    let mut m = MapInner::<AB> { wanted, f };
    module.map(&mut m)
}

/// The float tensor primitive of an autodiff backend's inner backend.
pub type InnerFloat<AB> =
    <<AB as burn::tensor::backend::AutodiffBackend>::InnerBackend as burn::tensor::backend::BackendTypes>::FloatTensorPrimitive;

struct MapInner<'a, AB: burn::tensor::backend::AutodiffBackend> {
    wanted: &'a dyn Fn(&ParamId) -> bool,
    f: &'a mut dyn FnMut(&ParamId, InnerFloat<AB>) -> InnerFloat<AB>,
}

impl<AB: burn::tensor::backend::AutodiffBackend> ModuleMapper<AB> for MapInner<'_, AB> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        if !(self.wanted)(&param.id) {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let inner = tensor.inner().into_primitive().tensor();
        let out = (self.f)(&id, inner);
        let mut t =
            Tensor::<AB, D>::from_inner(Tensor::from_primitive(TensorPrimitive::Float(out)));
        if require_grad {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}
