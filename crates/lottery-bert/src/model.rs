//! A BERT encoder (Devlin et al. 2019) as Hugging Face's `BertModel` computes it, with a sequence
//! classification head and a masked-language-model head. Parameters keep PyTorch's names and
//! layouts (a linear weight is `[out, in]`), so a `model.safetensors` loads by name unchanged.
//!
//! No dropout: training is deterministic for a seed (the references fine-tune with dropout 0.1).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::{gelu, softmax, tanh};
use serde::Deserialize;

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

    /// The last hidden states, `[batch · len, hidden]` (row `b · len + t`).
    pub fn forward(&self, batch: &TokenBatch<B>) -> Tensor<B, 2> {
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
        let mut x = e.norm.forward(words + positions + segment);
        // 0 where attended, a large negative number on padding: [b, 1, 1, t].
        let bias = (batch.attention.clone() - 1.0)
            .mul_scalar(f32::MAX)
            .reshape([b, 1, 1, t]);
        for layer in &self.layers {
            x = layer.forward(x, bias.clone(), b, t, self.heads);
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
    ) -> Tensor<B, 2> {
        let h = x.dims()[1];
        let d = h / heads;
        let split = |y: Tensor<B, 2>| y.reshape([b, t, heads, d]).swap_dims(1, 2);
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x.clone()));
        let scores = q.matmul(k.transpose()).div_scalar((d as f64).sqrt()) + bias;
        let context = softmax(scores, 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b * t, h]);
        let x = self
            .attention_norm
            .forward(self.attention_output.forward(context) + x);
        let inner = gelu(self.intermediate.forward(x.clone()));
        self.output_norm.forward(self.output.forward(inner) + x)
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
