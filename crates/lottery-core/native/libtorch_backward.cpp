// LibTorch's backward kernels for the convolution and the train-mode batch norm, called directly.
//
// tch 0.22 does not expose `at::convolution_backward` or `at::native_batch_norm_backward`; these
// two C functions do, on tch's tensor handles (an `at::Tensor*`, as in tch's own C API). They run
// the kernels PyTorch's autograd runs for `conv2d` and `BatchNorm2d` in training. A C++ exception
// becomes an error message for the caller (freed with `lottery_free_error`), never unwinds into
// Rust.

#include <ATen/core/Tensor.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/native_batch_norm_backward.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <tuple>

namespace {

char *error_message(const char *what) {
  char *copy = static_cast<char *>(std::malloc(std::strlen(what) + 1));
  if (copy != nullptr) {
    std::strcpy(copy, what);
  }
  return copy;
}

// Moves each wanted result into a new handle the caller owns (tch frees it with `delete`).
void hand_over(std::tuple<at::Tensor, at::Tensor, at::Tensor> results, const bool wanted[3],
               at::Tensor *out[3]) {
  at::Tensor parts[3] = {std::move(std::get<0>(results)), std::move(std::get<1>(results)),
                         std::move(std::get<2>(results))};
  for (int i = 0; i < 3; ++i) {
    out[i] = wanted[i] ? new at::Tensor(std::move(parts[i])) : nullptr;
  }
}

} // namespace

extern "C" {

// The gradients of `conv2d(input, weight, bias)` with respect to the input, the weight and the
// bias given the output's gradient; `wanted` says which to compute (`out[i]` is null otherwise).
// Returns null, or an error message.
char *lottery_convolution_backward(const at::Tensor *grad_output, const at::Tensor *input,
                                   const at::Tensor *weight, int64_t bias_size,
                                   const int64_t stride[2], const int64_t padding[2],
                                   const int64_t dilation[2], int64_t groups,
                                   const bool wanted[3], at::Tensor *out[3]) {
  try {
    std::optional<at::IntArrayRef> bias_sizes;
    if (bias_size >= 0) {
      bias_sizes = at::IntArrayRef(&bias_size, 1);
    }
    const int64_t output_padding[2] = {0, 0};
    hand_over(at::convolution_backward(*grad_output, *input, *weight, bias_sizes,
                                       at::IntArrayRef(stride, 2), at::IntArrayRef(padding, 2),
                                       at::IntArrayRef(dilation, 2), false,
                                       at::IntArrayRef(output_padding, 2), groups,
                                       {wanted[0], wanted[1], wanted[2]}),
              wanted, out);
    return nullptr;
  } catch (const std::exception &e) {
    return error_message(e.what());
  }
}

// The gradients of the train-mode `native_batch_norm(input, weight, bias)` with respect to the
// input, the weight and the bias, from the forward's saved mean and inverse standard deviation.
// Returns null, or an error message.
char *lottery_batch_norm_backward(const at::Tensor *grad_output, const at::Tensor *input,
                                  const at::Tensor *weight, const at::Tensor *save_mean,
                                  const at::Tensor *save_invstd, double eps, const bool wanted[3],
                                  at::Tensor *out[3]) {
  try {
    hand_over(at::native_batch_norm_backward(*grad_output, *input, *weight, std::nullopt,
                                             std::nullopt, *save_mean, *save_invstd, true, eps,
                                             {wanted[0], wanted[1], wanted[2]}),
              wanted, out);
    return nullptr;
  } catch (const std::exception &e) {
    return error_message(e.what());
  }
}

void lottery_free_error(char *message) { std::free(message); }

} // extern "C"
