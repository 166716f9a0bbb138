//! A BERT encoder (Devlin et al. 2019) as Hugging Face's `BertModel` computes it, with a sequence
//! classification head and a masked-language-model head. Parameters keep PyTorch's names and
//! layouts (a linear weight is `[out, in]`), so a `model.safetensors` loads by name unchanged.
//!
//! Dropout, where the references fine-tune with it (0.1), is [`Dropout`]: Hugging Face's four
//! places in the encoder (after the embeddings' norm, on the attention probabilities, after the
//! attention output and the feed-forward output, before each residual sum) and the classifier's
//! input. Its masks come from a seeded stream of its own, so a run with dropout is as repeatable
//! as one without.

use std::cell::Cell;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::{gelu, softmax, tanh};
use rand::{RngExt, SeedableRng};
use serde::Deserialize;

/// Inverted dropout with a seeded mask stream: each application draws the next mask of the
/// stream, zeroing an entry with probability `p` and scaling the survivors by `1 / (1 − p)`
/// (PyTorch's `nn.Dropout` in training mode). One value per forward pass: the masks of a pass
/// depend only on the seed it was made with and the order of the applications.
#[derive(Debug)]
pub struct Dropout {
    p: f32,
    seed: u64,
    site: Cell<u64>,
}

impl Dropout {
    /// Dropout at rate `p` in [0, 1) drawing from the stream `seed`.
    pub fn new(p: f64, seed: u64) -> Self {
        assert!((0.0..1.0).contains(&p), "a dropout rate lies in [0, 1)");
        Self {
            p: p as f32,
            seed,
            site: Cell::new(0),
        }
    }

    /// `x` with the next mask of the stream applied.
    pub fn apply<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if self.p == 0.0 {
            return x;
        }
        let site = self.site.get();
        self.site.set(site + 1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            self.seed ^ (site + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let dims = x.dims();
        let n: usize = dims.iter().product();
        let scale = 1.0 / (1.0 - self.p);
        let keep: Vec<f32> = (0..n)
            .map(|_| {
                if rng.random::<f32>() < self.p {
                    0.0
                } else {
                    scale
                }
            })
            .collect();
        let device = x.device();
        x * Tensor::<B, D>::from_data(TensorData::new(keep, dims), &device)
    }
}

/// `x` through `dropout` when there is one.
pub fn dropped<B: Backend, const D: usize>(
    dropout: Option<&Dropout>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    match dropout {
        Some(d) => d.apply(x),
        None => x,
    }
}

/// The sizes of a BERT encoder, as in Hugging Face's `config.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    /// Word pieces in the vocabulary.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Positions with an embedding.
    pub max_position_embeddings: usize,
    /// Token types (segments) with an embedding.
    pub type_vocab_size: usize,
    /// ε of the layer norms.
    pub layer_norm_eps: f64,
}

/// A linear layer in PyTorch layout: `y = x Wᵀ + b`, `W` `[out, in]`.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[out, in]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`.
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> Linear<B> {
    fn zeros(out: usize, inp: usize, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::zeros([out, inp], device)),
            bias: Param::from_tensor(Tensor::zeros([out], device)),
        }
    }

    /// `x Wᵀ + b` for `x` `[n, in]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x.matmul(self.weight.val().transpose()) + self.bias.val().unsqueeze_dim(0)
    }
}

/// Layer normalisation over the last dimension.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Scale γ.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift β.
    pub bias: Param<Tensor<B, 1>>,
    /// ε.
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    fn ones(n: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([n], device)),
            bias: Param::from_tensor(Tensor::zeros([n], device)),
            eps,
        }
    }

    /// Normalises each row of `x` `[n, width]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let (var, mean) = x.clone().var_mean_bias(1);
        let normed = (x - mean) / (var + self.eps).sqrt();
        normed * self.weight.val().unsqueeze_dim(0) + self.bias.val().unsqueeze_dim(0)
    }
}

/// Word, position and token-type embeddings, summed and normalised.
#[derive(Module, Debug)]
pub struct Embeddings<B: Backend> {
    /// `[vocab, hidden]`.
    pub word: Param<Tensor<B, 2>>,
    /// `[positions, hidden]`.
    pub position: Param<Tensor<B, 2>>,
    /// `[types, hidden]`.
    pub token_type: Param<Tensor<B, 2>>,
    /// The layer norm after the sum.
    pub norm: LayerNorm<B>,
}

/// One transformer layer (post-norm, as BERT).
#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    /// `attention.self.query`.
    pub query: Linear<B>,
    /// `attention.self.key`.
    pub key: Linear<B>,
    /// `attention.self.value`.
    pub value: Linear<B>,
    /// `attention.output.dense`.
    pub attention_output: Linear<B>,
    /// `attention.output.LayerNorm`.
    pub attention_norm: LayerNorm<B>,
    /// `intermediate.dense`.
    pub intermediate: Linear<B>,
    /// `output.dense`.
    pub output: Linear<B>,
    /// `output.LayerNorm`.
    pub output_norm: LayerNorm<B>,
}

/// The encoder with its pooler (Hugging Face's `BertModel`).
#[derive(Module, Debug)]
pub struct Bert<B: Backend> {
    /// Embeddings.
    pub embeddings: Embeddings<B>,
    /// Transformer layers.
    pub layers: Vec<EncoderLayer<B>>,
    /// `pooler.dense`: tanh of it on the `[CLS]` state is the pooled output.
    pub pooler: Linear<B>,
    /// Attention heads per layer.
    pub heads: usize,
}

/// The masked-language-model head (`cls.predictions`): a transform, then the word embeddings
/// (tied) as the decoder, plus a bias per word piece.
#[derive(Module, Debug)]
pub struct MlmHead<B: Backend> {
    /// `cls.predictions.transform.dense`.
    pub transform: Linear<B>,
    /// `cls.predictions.transform.LayerNorm`.
    pub norm: LayerNorm<B>,
    /// `cls.predictions.bias`, `[vocab]`.
    pub bias: Param<Tensor<B, 1>>,
}

/// The encoder with the head of one task.
#[derive(Module, Debug)]
pub struct BertWithHead<B: Backend> {
    /// The encoder.
    pub bert: Bert<B>,
    /// Sequence classification on the pooled output (`classifier`).
    pub classifier: Option<Linear<B>>,
    /// Masked language modelling (`cls.predictions`).
    pub mlm: Option<MlmHead<B>>,
}

/// A batch of token ids, padded: `ids` and `attention` (1 real, 0 padding) are `[batch, len]`.
#[derive(Debug, Clone)]
pub struct TokenBatch<B: Backend> {
    /// Word-piece ids.
    pub ids: Tensor<B, 2, Int>,
    /// 1 for real tokens, 0 for padding.
    pub attention: Tensor<B, 2>,
}

impl<B: Backend> Bert<B> {
    /// An encoder of `cfg`'s sizes with every weight zero and every norm the identity (filled by
    /// loading or by an initialisation).
    pub fn zeros(cfg: &BertConfig, device: &B::Device) -> Self {
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let layer = || EncoderLayer {
            query: Linear::zeros(h, h, device),
            key: Linear::zeros(h, h, device),
            value: Linear::zeros(h, h, device),
            attention_output: Linear::zeros(h, h, device),
            attention_norm: LayerNorm::ones(h, eps, device),
            intermediate: Linear::zeros(cfg.intermediate_size, h, device),
            output: Linear::zeros(h, cfg.intermediate_size, device),
            output_norm: LayerNorm::ones(h, eps, device),
        };
        Self {
            embeddings: Embeddings {
                word: Param::from_tensor(Tensor::zeros([cfg.vocab_size, h], device)),
                position: Param::from_tensor(Tensor::zeros(
                    [cfg.max_position_embeddings, h],
                    device,
                )),
                token_type: Param::from_tensor(Tensor::zeros([cfg.type_vocab_size, h], device)),
                norm: LayerNorm::ones(h, eps, device),
            },
            layers: (0..cfg.num_hidden_layers).map(|_| layer()).collect(),
            pooler: Linear::zeros(h, h, device),
            heads: cfg.num_attention_heads,
        }
    }

    /// The last hidden states, `[batch · len, hidden]` (row `b · len + t`), without dropout.
    pub fn forward(&self, batch: &TokenBatch<B>) -> Tensor<B, 2> {
        self.forward_dropping(batch, None)
    }

    /// [`Bert::forward`] with `dropout` (training) where BERT has it.
    pub fn forward_dropping(
        &self,
        batch: &TokenBatch<B>,
        dropout: Option<&Dropout>,
    ) -> Tensor<B, 2> {
        let [b, t] = batch.ids.dims();
        let e = &self.embeddings;
        let h = e.word.val().dims()[1];
        let words = e.word.val().select(0, batch.ids.clone().reshape([b * t]));
        let positions = e
            .position
            .val()
            .narrow(0, 0, t)
            .unsqueeze_dim::<3>(0)
            .expand([b, t, h])
            .reshape([b * t, h]);
        let segment = e.token_type.val().narrow(0, 0, 1);
        let mut x = dropped(dropout, e.norm.forward(words + positions + segment));
        // 0 where attended, a large negative number on padding: [b, 1, 1, t].
        let bias = (batch.attention.clone() - 1.0)
            .mul_scalar(f32::MAX)
            .reshape([b, 1, 1, t]);
        for layer in &self.layers {
            x = layer.forward(x, bias.clone(), b, t, self.heads, dropout);
        }
        x
    }

    /// The pooled output: `tanh(pooler(h_[CLS]))`, `[batch, hidden]`, from `states` of
    /// [`Bert::forward`].
    pub fn pool(&self, states: Tensor<B, 2>, batch: usize) -> Tensor<B, 2> {
        let [rows, h] = states.dims();
        let t = rows / batch;
        let cls = states
            .reshape([batch, t, h])
            .narrow(1, 0, 1)
            .reshape([batch, h]);
        tanh(self.pooler.forward(cls))
    }
}

impl<B: Backend> EncoderLayer<B> {
    fn forward(
        &self,
        x: Tensor<B, 2>,
        bias: Tensor<B, 4>,
        b: usize,
        t: usize,
        heads: usize,
        dropout: Option<&Dropout>,
    ) -> Tensor<B, 2> {
        let h = x.dims()[1];
        let d = h / heads;
        let split = |y: Tensor<B, 2>| y.reshape([b, t, heads, d]).swap_dims(1, 2);
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x.clone()));
        let scores = q.matmul(k.transpose()).div_scalar((d as f64).sqrt()) + bias;
        let context = dropped(dropout, softmax(scores, 3))
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b * t, h]);
        let x = self
            .attention_norm
            .forward(dropped(dropout, self.attention_output.forward(context)) + x);
        let inner = gelu(self.intermediate.forward(x.clone()));
        self.output_norm
            .forward(dropped(dropout, self.output.forward(inner)) + x)
    }
}

impl<B: Backend> MlmHead<B> {
    /// Logits over the vocabulary of the rows `states` `[n, hidden]`, decoding with the tied
    /// word embeddings `word` `[vocab, hidden]`.
    pub fn forward(&self, states: Tensor<B, 2>, word: Tensor<B, 2>) -> Tensor<B, 2> {
        let h = self.norm.forward(gelu(self.transform.forward(states)));
        h.matmul(word.transpose()) + self.bias.val().unsqueeze_dim(0)
    }
}

/// A mutable view of one named parameter.
pub enum ParamMut<'a, B: Backend> {
    /// A vector (bias, norm).
    Vector(&'a mut Param<Tensor<B, 1>>),
    /// A matrix (linear weight, embedding table).
    Matrix(&'a mut Param<Tensor<B, 2>>),
}

impl<B: Backend> BertWithHead<B> {
    /// Calls `f` with the PyTorch name of every parameter, in a fixed order: the encoder as
    /// `BertModel` names it (`embeddings.…`, `encoder.layer.<i>.…`, `pooler.dense.…`), then the
    /// head (`classifier.…` or `cls.predictions.…`).
    pub fn for_each_param(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_, B>)) {
        fn linear<B: Backend>(
            f: &mut dyn FnMut(&str, ParamMut<'_, B>),
            name: &str,
            l: &mut Linear<B>,
        ) {
            f(&format!("{name}.weight"), ParamMut::Matrix(&mut l.weight));
            f(&format!("{name}.bias"), ParamMut::Vector(&mut l.bias));
        }
        fn norm<B: Backend>(
            f: &mut dyn FnMut(&str, ParamMut<'_, B>),
            name: &str,
            n: &mut LayerNorm<B>,
        ) {
            f(&format!("{name}.weight"), ParamMut::Vector(&mut n.weight));
            f(&format!("{name}.bias"), ParamMut::Vector(&mut n.bias));
        }
        let e = &mut self.bert.embeddings;
        f(
            "embeddings.word_embeddings.weight",
            ParamMut::Matrix(&mut e.word),
        );
        f(
            "embeddings.position_embeddings.weight",
            ParamMut::Matrix(&mut e.position),
        );
        f(
            "embeddings.token_type_embeddings.weight",
            ParamMut::Matrix(&mut e.token_type),
        );
        norm(f, "embeddings.LayerNorm", &mut e.norm);
        for (i, l) in self.bert.layers.iter_mut().enumerate() {
            let p = format!("encoder.layer.{i}");
            linear(f, &format!("{p}.attention.self.query"), &mut l.query);
            linear(f, &format!("{p}.attention.self.key"), &mut l.key);
            linear(f, &format!("{p}.attention.self.value"), &mut l.value);
            linear(
                f,
                &format!("{p}.attention.output.dense"),
                &mut l.attention_output,
            );
            norm(
                f,
                &format!("{p}.attention.output.LayerNorm"),
                &mut l.attention_norm,
            );
            linear(f, &format!("{p}.intermediate.dense"), &mut l.intermediate);
            linear(f, &format!("{p}.output.dense"), &mut l.output);
            norm(f, &format!("{p}.output.LayerNorm"), &mut l.output_norm);
        }
        linear(f, "pooler.dense", &mut self.bert.pooler);
        if let Some(c) = &mut self.classifier {
            linear(f, "classifier", c);
        }
        if let Some(m) = &mut self.mlm {
            linear(f, "cls.predictions.transform.dense", &mut m.transform);
            norm(f, "cls.predictions.transform.LayerNorm", &mut m.norm);
            f("cls.predictions.bias", ParamMut::Vector(&mut m.bias));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lottery_core::backend::{Backend as B, default_device};

    fn draw(p: f64, seed: u64) -> Vec<f32> {
        let d = Dropout::new(p, seed);
        let x = Tensor::<B, 2>::ones([64, 128], &default_device());
        let _first = d.apply(x.clone());
        d.apply(x).into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn dropout_is_seeded_inverted_and_at_its_rate() {
        let a = draw(0.1, 11);
        assert_eq!(a, draw(0.1, 11), "the same seed draws the same masks");
        assert_ne!(a, draw(0.1, 12));
        let zeros = a.iter().filter(|v| **v == 0.0).count() as f64 / a.len() as f64;
        assert!((zeros - 0.1).abs() < 0.01, "{zeros}");
        let scale = 1.0 / 0.9f32;
        assert!(a.iter().all(|v| *v == 0.0 || *v == scale));
        // The second application of a stream differs from its first.
        let d = Dropout::new(0.1, 11);
        let x = Tensor::<B, 2>::ones([64, 128], &default_device());
        let first = d.apply(x).into_data().to_vec::<f32>().unwrap();
        assert_ne!(first, a);
        assert!(draw(0.0, 11).iter().all(|v| *v == 1.0));
    }
}
