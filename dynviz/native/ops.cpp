// Small operators of the executed paths, as one call each: at batch size one their PyTorch versions
// are several operations of a few microseconds each, which the arithmetic does not need.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

namespace {

// A gate (dynviz.models.gates.Gate) on one feature map: global average pooling, then
// fc2(ReLU(fc1(pooled))). x: [1, C, H, W]; fc1: [D, C], [D]; fc2: [U, D], [U]. Returns the logits [U].
at::Tensor gate_logits(const at::Tensor& x, const at::Tensor& fc1_weight, const at::Tensor& fc1_bias,
                       const at::Tensor& fc2_weight, const at::Tensor& fc2_bias) {
  TORCH_CHECK(x.dim() == 4 && x.size(0) == 1 && x.scalar_type() == at::kFloat, "gate_logits: one float map");
  const auto map = x.contiguous(at::MemoryFormat::ChannelsLast);  // each position a run of C channels
  const auto w1 = fc1_weight.contiguous(), b1 = fc1_bias.contiguous();
  const auto w2 = fc2_weight.contiguous(), b2 = fc2_bias.contiguous();
  const int64_t channels = map.size(1), positions = map.size(2) * map.size(3);
  const int64_t width = w1.size(0), units = w2.size(0);
  TORCH_CHECK(w1.size(1) == channels && w2.size(1) == width, "gate_logits: shapes do not match");

  std::vector<float> pooled(channels, 0.f);
  const float* values = map.data_ptr<float>();
  for (int64_t p = 0; p < positions; ++p) {
    const float* position = values + p * channels;
    for (int64_t c = 0; c < channels; ++c) pooled[c] += position[c];
  }
  std::vector<float> hidden(width);
  const float* fc1 = w1.data_ptr<float>();
  for (int64_t j = 0; j < width; ++j) {
    float sum = 0.f;
    for (int64_t c = 0; c < channels; ++c) sum += fc1[j * channels + c] * pooled[c];
    const float h = sum / positions + b1.data_ptr<float>()[j];
    hidden[j] = h > 0.f ? h : 0.f;
  }
  auto logits = at::empty({units}, map.options().memory_format(at::MemoryFormat::Contiguous));
  const float* fc2 = w2.data_ptr<float>();
  for (int64_t u = 0; u < units; ++u) {
    float sum = b2.data_ptr<float>()[u];
    for (int64_t j = 0; j < width; ++j) sum += fc2[u * width + j] * hidden[j];
    logits.data_ptr<float>()[u] = sum;
  }
  return logits;
}

}  // namespace

TORCH_LIBRARY(dynviz, m) {
  m.def("gate_logits(Tensor x, Tensor fc1_weight, Tensor fc1_bias, Tensor fc2_weight, Tensor fc2_bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(dynviz, CPU, m) { m.impl("gate_logits", &gate_logits); }
