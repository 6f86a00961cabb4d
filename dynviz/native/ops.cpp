// Small operators of the executed paths, as one call each: at batch size one their PyTorch versions
// are several operations of a few microseconds each, which the arithmetic does not need.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

namespace {

// LANES floats as the compiler's vector extension: one AVX-512 or AVX register, or several narrower ones,
// whatever the machine has.
template <int LANES>
struct Vector {
  typedef float type __attribute__((vector_size(4 * LANES)));  // GCC ignores the attribute on an alias template
};
template <int LANES>
using Floats = typename Vector<LANES>::type;

template <int LANES>
inline Floats<LANES> load(const float* p) {
  Floats<LANES> v;
  std::memcpy(&v, p, sizeof v);  // an unaligned vector load
  return v;
}

// ReLU6 on LANES floats at once (per lane, min and max compile to scalar compares and blends: half of a masked
// MBConv block's time at 56×56).
template <int LANES>
inline Floats<LANES> relu6(Floats<LANES> v) {
  const Floats<LANES> zero{}, six = zero + 6.f;
  v = v < zero ? zero : v;
  return v > six ? six : v;
}

// Adds a · b over n floats to eight partial sums held in one vector, and returns what is left past the last eight
// as a plain sum: the compiler keeps a plain float sum in order and so never vectorises it (dynconv_resnet_cifar's
// executed path, whose mask units run here: 3.5 → 3.2 ms). Several products share the partial sums, so that their
// lanes are added up once.
inline float accumulate(Floats<8>& partial, const float* a, const float* b, int64_t n) {
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) partial += load<8>(a + k) * load<8>(b + k);
  float rest = 0.f;
  for (; k < n; ++k) rest += a[k] * b[k];
  return rest;
}

// The sum of a vector's eight lanes: the partial sums above, added up once.
inline float lanes_sum(const Floats<8>& partial) {
  float sum = 0.f;
  for (int lane = 0; lane < 8; ++lane) sum += partial[lane];
  return sum;
}

// Each channel's sum over the ``positions`` of a channels-last map (global pooling, before the division).
std::vector<float> channel_sums(const float* map, int64_t positions, int64_t channels) {
  std::vector<float> sums(channels, 0.f);
  for (int64_t p = 0; p < positions; ++p)
    for (int64_t c = 0; c < channels; ++c) sums[c] += map[p * channels + c];
  return sums;
}

// Each channel's sum over the positions of x [1, C, H, W], read in the layout it comes in (a channel-gated block's
// NCHW input was copied to channels-last for this: about 25 µs a block on CIFAR's maps).
std::vector<float> pooled_sums(const at::Tensor& x) {
  const int64_t channels = x.size(1), positions = x.size(2) * x.size(3);
  if (!x.is_contiguous()) {
    const auto map = x.contiguous(at::MemoryFormat::ChannelsLast);  // each position a run of C channels
    return channel_sums(map.data_ptr<float>(), positions, channels);
  }
  std::vector<float> sums(channels);
  const float* planes = x.data_ptr<float>();
  for (int64_t c = 0; c < channels; ++c) {
    const float* plane = planes + c * positions;
    Floats<8> partial{};
    int64_t i = 0;
    for (; i + 8 <= positions; i += 8) partial += load<8>(plane + i);
    float sum = 0.f;
    for (; i < positions; ++i) sum += plane[i];
    sums[c] = sum + lanes_sum(partial);
  }
  return sums;
}

// A gate (dynviz.models.gates.Gate) on one feature map: global average pooling, then
// fc2(ReLU(fc1(pooled))). x: [1, C, H, W]; fc1: [D, C], [D]; fc2: [U, D], [U]. Returns the logits [U].
at::Tensor gate_logits(const at::Tensor& x, const at::Tensor& fc1_weight, const at::Tensor& fc1_bias,
                       const at::Tensor& fc2_weight, const at::Tensor& fc2_bias) {
  TORCH_CHECK(x.dim() == 4 && x.size(0) == 1 && x.scalar_type() == at::kFloat, "gate_logits: one float map");
  const auto w1 = fc1_weight.contiguous(), b1 = fc1_bias.contiguous();
  const auto w2 = fc2_weight.contiguous(), b2 = fc2_bias.contiguous();
  const int64_t channels = x.size(1), positions = x.size(2) * x.size(3);
  const int64_t width = w1.size(0), units = w2.size(0);
  TORCH_CHECK(w1.size(1) == channels && w2.size(1) == width, "gate_logits: shapes do not match");

  const auto pooled = pooled_sums(x);
  std::vector<float> hidden(width);
  const float* fc1 = w1.data_ptr<float>();
  for (int64_t j = 0; j < width; ++j) {
    float sum = 0.f;
    for (int64_t c = 0; c < channels; ++c) sum += fc1[j * channels + c] * pooled[c];
    const float h = sum / positions + b1.data_ptr<float>()[j];
    hidden[j] = h > 0.f ? h : 0.f;
  }
  auto logits = at::empty({units}, x.options().memory_format(at::MemoryFormat::Contiguous));
  const float* fc2 = w2.data_ptr<float>();
  for (int64_t u = 0; u < units; ++u) {
    float sum = b2.data_ptr<float>()[u];
    for (int64_t j = 0; j < width; ++j) sum += fc2[u * width + j] * hidden[j];
    logits.data_ptr<float>()[u] = sum;
  }
  return logits;
}


// Flat indices of the positions of a side × side mask that are on.
std::vector<int64_t> positions_of(const std::vector<uint8_t>& mask) {
  std::vector<int64_t> positions;
  for (int64_t p = 0; p < static_cast<int64_t>(mask.size()); ++p)
    if (mask[p]) positions.push_back(p);
  return positions;
}

// The mask p ≥ θ (as PyTorch compares) of probabilities [side, side].
std::vector<uint8_t> mask_of(const at::Tensor& probabilities, double threshold) {
  const float* p = probabilities.data_ptr<float>();
  std::vector<uint8_t> mask(probabilities.numel());
  for (size_t k = 0; k < mask.size(); ++k) mask[k] = p[k] >= static_cast<float>(threshold);
  return mask;
}

// A side × side mask grown by ``radius`` positions (a square window, as dynviz.models.dynconv.dilate): where a
// convolution must run so that the next one, of half-kernel ``radius``, finds every neighbour of the mask.
std::vector<uint8_t> grown_by(const std::vector<uint8_t>& mask, int64_t side, int64_t radius) {
  std::vector<uint8_t> grown(mask.size(), 0);
  for (int64_t i = 0; i < side; ++i)
    for (int64_t j = 0; j < side; ++j)
      if (mask[i * side + j])
        for (int64_t y = std::max<int64_t>(i - radius, 0); y <= std::min(i + radius, side - 1); ++y)
          for (int64_t x = std::max<int64_t>(j - radius, 0); x <= std::min(j + radius, side - 1); ++x)
            grown[y * side + x] = 1;
  return grown;
}

// The 3×3 patches (padding 1) around ``positions`` of a side × side output, read from a channels-last map
// [height][width][channels] with ``stride``, as the rows of [M, 9·channels] (zeros outside the map).
at::Tensor gathered_patches(const float* map, int64_t height, int64_t width, int64_t channels, int64_t stride,
                            int64_t side, const std::vector<int64_t>& positions, const at::TensorOptions& options) {
  auto patches = at::empty({static_cast<int64_t>(positions.size()), 9 * channels}, options);
  float* row = patches.data_ptr<float>();
  for (const int64_t p : positions) {
    const int64_t top = (p / side) * stride - 1, left = (p % side) * stride - 1;
    for (int64_t dy = 0; dy < 3; ++dy)
      for (int64_t dx = 0; dx < 3; ++dx, row += channels) {
        const int64_t y = top + dy, x = left + dx;
        if (y < 0 || y >= height || x < 0 || x >= width)
          std::fill(row, row + channels, 0.f);
        else
          std::copy_n(map + (y * width + x) * channels, channels, row);
      }
  }
  return patches;
}

// DynConv's mask unit (dynviz.models.dynconv.MaskUnit) on one channels-last map x [1, C, H, W]: the
// probabilities p = σ(s) on the output grid [H', W'], s_p = unit · patch_p + context · mean(x) + b, a 3×3
// convolution with ``stride`` and padding 1 plus a term from the pooled map. The unit's weights [9·C] are in the
// order of a channels-last patch. As PyTorch operations it is a convolution with one output channel, oneDNN's
// slowest case (2–4× this loop's time on Lite0's blocks), a pooling, a product, a sum and a sigmoid.
at::Tensor mask_unit(const at::Tensor& x, const at::Tensor& unit_weight, const at::Tensor& unit_context,
                     const at::Tensor& unit_bias, int64_t stride) {
  const auto map = x.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t channels = map.size(1), height = map.size(2), width = map.size(3);
  TORCH_CHECK(unit_weight.numel() == 9 * channels && unit_context.numel() == channels,
              "mask_unit: shapes do not match");
  const float* input = map.data_ptr<float>();

  // The image's term, shared by every position: b + context · mean(x).
  const auto context_weights = unit_context.contiguous();  // held: a pointer into a temporary would dangle
  const auto pooled = channel_sums(input, height * width, channels);
  float image_term = unit_bias.item<float>();
  for (int64_t c = 0; c < channels; ++c)
    image_term += context_weights.data_ptr<float>()[c] * pooled[c] / (height * width);

  const int64_t rows = (height - 1) / stride + 1, columns = (width - 1) / stride + 1;
  auto probabilities = at::empty({rows, columns}, map.options().memory_format(at::MemoryFormat::Contiguous));
  float* p = probabilities.data_ptr<float>();
  const auto unit_weights = unit_weight.contiguous();
  const float* unit = unit_weights.data_ptr<float>();
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < columns; ++j) {
      Floats<8> partial{};
      float logit = image_term;
      for (int64_t dy = 0; dy < 3; ++dy)
        for (int64_t dx = 0; dx < 3; ++dx) {
          const int64_t row = i * stride - 1 + dy, column = j * stride - 1 + dx;
          if (row < 0 || row >= height || column < 0 || column >= width) continue;  // zero padding
          logit += accumulate(partial, unit + (dy * 3 + dx) * channels, input + (row * width + column) * channels,
                              channels);
        }
      logit += lanes_sum(partial);
      p[i * columns + j] = 1.f / (1.f + std::exp(-logit));
    }
  return probabilities;
}

// A DynConv basic block (dynviz.models.dynconv) on one channels-last map x [1, C, H, W]:
//   probabilities p on the output grid from the mask unit (mask_unit);
//   conv1 (3×3, ``stride``; BatchNorm folded, ReLU) only where the mask p ≥ θ grown by one position is on,
//   conv2 (3×3; BatchNorm folded) only where the mask is on, added to the shortcut there; then ReLU.
// The shortcut is x, or x subsampled by ``stride`` and zero-padded to the wider output (the paper's option A).
// The unit's and the conv weights have their rows in the order of a channels-last patch ([9·C] and
// [9·C_in, C_out]). Returns the output [1, C_out, H', W'] (channels-last), the probabilities [H', W'] and the
// positions each convolution computed [2].
std::tuple<at::Tensor, at::Tensor, at::Tensor> dynconv_basic_block(
    const at::Tensor& x, const at::Tensor& unit_weight, const at::Tensor& unit_context, const at::Tensor& unit_bias,
    double threshold, const at::Tensor& conv1_weight, const at::Tensor& conv1_bias, const at::Tensor& conv2_weight,
    const at::Tensor& conv2_bias, int64_t stride) {
  TORCH_CHECK(x.dim() == 4 && x.size(0) == 1 && x.scalar_type() == at::kFloat, "dynconv_basic_block: one float map");
  const auto map = x.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t channels = map.size(1), height = map.size(2), width = map.size(3);
  const int64_t side = (height - 1) / stride + 1, middle = conv1_weight.size(1), out_channels = conv2_weight.size(1);
  TORCH_CHECK(height == width && conv1_weight.size(0) == 9 * channels && conv2_weight.size(0) == 9 * middle &&
                  out_channels >= channels,
              "dynconv_basic_block: shapes do not match");
  const float* input = map.data_ptr<float>();
  const auto options = map.options().memory_format(at::MemoryFormat::Contiguous);

  const auto probabilities = mask_unit(map, unit_weight, unit_context, unit_bias, stride);
  const auto mask = mask_of(probabilities, threshold);
  const auto first = positions_of(grown_by(mask, side, 1)), second = positions_of(mask);

  // conv1 at the grown positions, scattered onto a zero map: conv2's input, zero where conv1 did not run.
  auto hidden = at::zeros({side, side, middle}, options);
  if (!first.empty()) {
    const auto values = at::addmm(conv1_bias, gathered_patches(input, height, width, channels, stride, side, first,
                                                                options), conv1_weight);
    const float* v = values.data_ptr<float>();
    float* h = hidden.data_ptr<float>();
    for (size_t m = 0; m < first.size(); ++m)
      for (int64_t c = 0; c < middle; ++c) h[first[m] * middle + c] = std::max(v[m * middle + c], 0.f);
  }

  // The shortcut everywhere, conv2 added where the mask is on, then ReLU.
  auto out = at::empty({1, out_channels, side, side}, options.memory_format(at::MemoryFormat::ChannelsLast));
  float* y = out.data_ptr<float>();
  for (int64_t i = 0; i < side; ++i)
    for (int64_t j = 0; j < side; ++j) {
      const float* pixel = input + (i * stride * width + j * stride) * channels;
      float* target = y + (i * side + j) * out_channels;
      std::copy_n(pixel, channels, target);
      std::fill(target + channels, target + out_channels, 0.f);
    }
  if (!second.empty()) {
    const auto values = at::addmm(conv2_bias, gathered_patches(hidden.data_ptr<float>(), side, side, middle, 1, side,
                                                                second, options), conv2_weight);
    const float* v = values.data_ptr<float>();
    for (size_t m = 0; m < second.size(); ++m)
      for (int64_t c = 0; c < out_channels; ++c) y[second[m] * out_channels + c] += v[m * out_channels + c];
  }
  for (int64_t k = 0; k < side * side * out_channels; ++k) y[k] = std::max(y[k], 0.f);
  const auto counts = at::tensor({static_cast<int64_t>(first.size()), static_cast<int64_t>(second.size())});
  return {out, probabilities, counts};
}

// A DynConv MBConv block with an identity shortcut (EfficientNet-Lite's, dynviz.models.dynconv) on one
// channels-last map x [1, C, S, S]:
//   probabilities p on the grid from the mask unit (mask_unit, stride 1);
//   expand (1×1, [C, E]; BatchNorm folded, ReLU6) only where the mask p ≥ θ grown by the depthwise half-kernel is on
//   (a block without expansion passes an empty weight: the depthwise reads x there);
//   depthwise (k×k, [k·k, E]: each tap's E weights in a row; folded, ReLU6) and project (1×1, [E, C]; folded) only
//   where the mask is on, added to x there.
// Every neighbour inside the map of a position on the mask is one the expansion computed, so the depthwise reads
// the expansion's rows where they are and no map is zeroed or scattered. Returns the output [1, C, S, S]
// (channels-last), the probabilities [S, S] and the positions each convolution computed [3].
std::tuple<at::Tensor, at::Tensor, at::Tensor> dynconv_mbconv_block(
    const at::Tensor& x, const at::Tensor& unit_weight, const at::Tensor& unit_context, const at::Tensor& unit_bias,
    double threshold, const at::Tensor& expand_weight, const at::Tensor& expand_bias,
    const at::Tensor& depthwise_weight, const at::Tensor& depthwise_bias, const at::Tensor& project_weight,
    const at::Tensor& project_bias) {
  TORCH_CHECK(x.dim() == 4 && x.size(0) == 1 && x.scalar_type() == at::kFloat, "dynconv_mbconv_block: one float map");
  const auto map = x.contiguous(at::MemoryFormat::ChannelsLast);
  const bool expands = expand_weight.numel() > 0;
  const int64_t channels = map.size(1), side = map.size(2), expanded = expands ? expand_weight.size(1) : channels;
  const auto kernel = static_cast<int64_t>(std::lround(std::sqrt(depthwise_weight.size(0)))), radius = kernel / 2;
  TORCH_CHECK(map.size(3) == side && (!expands || expand_weight.size(0) == channels) &&
                  kernel * kernel == depthwise_weight.size(0) &&
                  depthwise_weight.size(1) == expanded && project_weight.size(0) == expanded &&
                  project_weight.size(1) == channels,
              "dynconv_mbconv_block: shapes do not match");
  const float* input = map.data_ptr<float>();
  const auto options = map.options().memory_format(at::MemoryFormat::Contiguous);

  const auto probabilities = mask_unit(map, unit_weight, unit_context, unit_bias, 1);
  const auto mask = mask_of(probabilities, threshold);
  const auto first = positions_of(grown_by(mask, side, radius)), second = positions_of(mask);
  auto out = map.clone(at::MemoryFormat::ChannelsLast);  // the shortcut, where the branch is not computed
  const auto computed = static_cast<int64_t>(second.size());
  const auto counts = expands ? at::tensor({static_cast<int64_t>(first.size()), computed, computed})
                              : at::tensor({computed, computed});
  if (second.empty()) return {out, probabilities, counts};

  // The depthwise's input at each position it reads: the expansion's row, computed at the grown positions only,
  // or the block's input itself.
  std::vector<const float*> row_at(side * side);
  at::Tensor hidden;
  if (expands) {
    auto gathered = at::empty({static_cast<int64_t>(first.size()), channels}, options);
    float* rows_in = gathered.data_ptr<float>();
    for (size_t m = 0; m < first.size(); ++m) std::copy_n(input + first[m] * channels, channels, rows_in + m * channels);
    hidden = at::addmm(expand_bias, gathered, expand_weight).clamp_(0.f, 6.f);
    const float* rows_out = hidden.data_ptr<float>();
    for (size_t m = 0; m < first.size(); ++m) row_at[first[m]] = rows_out + m * expanded;
  } else {
    for (int64_t q = 0; q < side * side; ++q) row_at[q] = input + q * channels;
  }

  // The depthwise at the mask's positions, LANES channels at a time over its taps inside the map.
  constexpr int LANES = 8;
  const auto taps = depthwise_weight.contiguous(), tap_bias = depthwise_bias.contiguous();
  const float *w = taps.data_ptr<float>(), *b = tap_bias.data_ptr<float>();
  auto depthwise = at::empty({static_cast<int64_t>(second.size()), expanded}, options);
  float* activations = depthwise.data_ptr<float>();
  std::vector<const float*> rows(kernel * kernel);
  std::vector<int64_t> tap_index(kernel * kernel);
  for (size_t m = 0; m < second.size(); ++m) {
    const int64_t i = second[m] / side, j = second[m] % side;
    int64_t inside = 0;
    for (int64_t dy = 0; dy < kernel; ++dy)
      for (int64_t dx = 0; dx < kernel; ++dx) {
        const int64_t y = i + dy - radius, x = j + dx - radius;
        if (y < 0 || y >= side || x < 0 || x >= side) continue;  // zero padding
        rows[inside] = row_at[y * side + x];
        tap_index[inside++] = dy * kernel + dx;
      }
    float* target = activations + m * expanded;
    int64_t e = 0;
    for (; e + LANES <= expanded; e += LANES) {
      Floats<LANES> sum = load<LANES>(b + e);
      for (int64_t t = 0; t < inside; ++t)
        sum += load<LANES>(w + tap_index[t] * expanded + e) * load<LANES>(rows[t] + e);
      const Floats<LANES> activated = relu6<LANES>(sum);
      std::memcpy(target + e, &activated, sizeof activated);
    }
    for (; e < expanded; ++e) {
      float sum = b[e];
      for (int64_t t = 0; t < inside; ++t) sum += w[tap_index[t] * expanded + e] * rows[t][e];
      target[e] = std::min(std::max(sum, 0.f), 6.f);
    }
  }

  // The projection at the mask's positions, added to the shortcut there.
  const auto projected = at::addmm(project_bias, depthwise, project_weight);
  const float* v = projected.data_ptr<float>();
  float* y = out.data_ptr<float>();
  for (size_t m = 0; m < second.size(); ++m)
    for (int64_t c = 0; c < channels; ++c) y[second[m] * channels + c] += v[m * channels + c];
  return {out, probabilities, counts};
}

// Whether vectors of 16 floats are one register each (AVX-512, 32 of them). With AVX2's sixteen 8-float registers
// convolve3x3's BLOCK × TILE accumulators of 16 floats spill to memory at every product: channel_gate_resnet_cifar's
// executed path took 21 ms instead of 2.9 ms with vectors of 8 on an AVX2-only EPYC.
#ifdef __AVX512F__
constexpr bool WIDE_VECTORS = true;
#else
constexpr bool WIDE_VECTORS = false;
#endif

// A 3×3 convolution, stride 1 or 2, for output channels o < outputs:
//   out[o][y][x] = bias[o] + Σ_c Σ_ky,kx weights[o·inputs + c][3·ky + kx] · in(c, y·stride + ky, x·stride + kx),
// ``weights`` pointing at each (output, input) pair's nine weights, so that any subset of either side's channels
// runs without copying weights (how channel gating slices a convolution). The input is zero-padded by one; for
// stride 2 its columns are split into even and odd halves (``padded_for``) so that every read is a run of
// neighbours. LANES outputs of a row make a vector (the side is a multiple of LANES); BLOCK output
// channels × TILE vectors are accumulated in registers, each input vector read once for BLOCK channels.
template <int STRIDE, int LANES>
void convolve3x3(const float* in, int64_t in_width, int64_t in_rows, int64_t inputs, const float* const* weights,
                 const float* bias, int64_t outputs, int64_t side, bool relu, float* out, int64_t out_plane,
                 int64_t out_row) {
  constexpr int BLOCK = 8, TILE = 2;
  static const float none[9] = {};
  const int64_t vectors = side * side / LANES, per_row = side / LANES, plane = in_rows * in_width;
  // Where column kx of the window starts, relative to the output column, in the (split) input row.
  int64_t column[3];
  for (int kx = 0; kx < 3; ++kx) column[kx] = STRIDE == 1 ? kx : (kx % 2) * (in_width / 2) + kx / 2;
  for (int64_t first = 0; first < outputs; first += BLOCK) {
    const int64_t n = std::min<int64_t>(BLOCK, outputs - first);
    for (int64_t v0 = 0; v0 < vectors; v0 += TILE) {
      const int tile = static_cast<int>(std::min<int64_t>(TILE, vectors - v0));
      Floats<LANES> acc[BLOCK][TILE];
      int64_t origin[TILE];  // each vector's first input column in row 0 of a plane
      for (int t = 0; t < TILE; ++t) {
        const int64_t v = v0 + std::min(t, tile - 1), y = v / per_row, x = (v % per_row) * LANES;
        origin[t] = y * STRIDE * in_width + x;
      }
      for (int j = 0; j < BLOCK; ++j)
        for (int t = 0; t < TILE; ++t) acc[j][t] = Floats<LANES>{} + (j < n ? bias[first + j] : 0.f);
      for (int64_t c = 0; c < inputs; ++c) {
        const float* w[BLOCK];
        for (int j = 0; j < BLOCK; ++j) w[j] = j < n ? weights[(first + j) * inputs + c] : none;
        const float* channel = in + c * plane;
        for (int ky = 0; ky < 3; ++ky)
          for (int kx = 0; kx < 3; ++kx) {
            Floats<LANES> window[TILE];
            for (int t = 0; t < TILE; ++t) window[t] = load<LANES>(channel + origin[t] + ky * in_width + column[kx]);
            for (int j = 0; j < BLOCK; ++j) {
              const float weight = w[j][3 * ky + kx];
              for (int t = 0; t < TILE; ++t) acc[j][t] += weight * window[t];
            }
          }
      }
      for (int64_t j = 0; j < n; ++j)
        for (int t = 0; t < tile; ++t) {
          const int64_t v = v0 + t, y = v / per_row, x = (v % per_row) * LANES;
          Floats<LANES> value = acc[j][t];
          if (relu) value = value > 0.f ? value : Floats<LANES>{};
          std::memcpy(out + (first + j) * out_plane + y * out_row + x, &value, sizeof value);
        }
    }
  }
}

// x [C, side, side] zero-padded by one ([C, side + 2, side + 2]), with the columns of every row split into
// even then odd ones where the convolution reading it has stride 2 (see convolve3x3).
at::Tensor padded_for(const at::Tensor& x, int64_t stride) {
  const int64_t channels = x.size(0), side = x.size(1), padded = side + 2;
  auto out = at::zeros({channels, padded, padded}, x.options());
  const float* in = x.data_ptr<float>();
  float* target = out.data_ptr<float>();
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t y = 0; y < side; ++y) {
      const float* row = in + (c * side + y) * side;
      float* padded_row = target + (c * padded + y + 1) * padded;
      for (int64_t x = 0; x < side; ++x) {
        const int64_t column = x + 1;  // in the padded row
        padded_row[stride == 1 ? column : (column % 2) * (padded / 2) + column / 2] = row[x];
      }
    }
  return out;
}

// A channel-gated basic block (dynviz.models.channel_gating) on one map x [1, C, H, W]: the gate's
// probabilities p over conv1's output channels; conv1 (3×3, ``stride``; BatchNorm folded, ReLU) computes
// only the channels with p ≥ θ, conv2 (3×3; BatchNorm folded) reads only those, its output is added to the
// shortcut (x, or x subsampled and zero-padded: option A), then ReLU. Weights [C_out, C_in, 3, 3].
// Returns the output [1, C_out, H', W'] and the probabilities [C_mid].
std::tuple<at::Tensor, at::Tensor> channel_gated_basic_block(
    const at::Tensor& x, const at::Tensor& fc1_weight, const at::Tensor& fc1_bias, const at::Tensor& fc2_weight,
    const at::Tensor& fc2_bias, double threshold, const at::Tensor& conv1_weight, const at::Tensor& conv1_bias,
    const at::Tensor& conv2_weight, const at::Tensor& conv2_bias, int64_t stride) {
  const auto probabilities = gate_logits(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias).sigmoid_();
  const auto map = x.contiguous();
  const int64_t channels = map.size(1), side_in = map.size(2), side = (side_in - 1) / stride + 1;
  const int64_t middle = conv1_weight.size(0), out_channels = conv2_weight.size(0);
  TORCH_CHECK(map.size(3) == side_in && conv1_weight.size(1) == channels && conv2_weight.size(1) == middle &&
                  out_channels >= channels && probabilities.numel() == middle,
              "channel_gated_basic_block: shapes do not match");
  const auto options = map.options();
  const float* p = probabilities.data_ptr<float>();
  std::vector<int64_t> on;
  for (int64_t c = 0; c < middle; ++c)
    if (p[c] >= static_cast<float>(threshold)) on.push_back(c);  // as PyTorch compares
  const int64_t active = on.size();

  // conv1's active channels, from x padded by one, into the interior of conv2's padded input.
  TORCH_CHECK(side % 8 == 0 && side_in % 2 == 0, "channel_gated_basic_block: sides must be multiples of 8");
  const auto padded = padded_for(map[0], stride);
  const int64_t padded_side = side + 2;
  auto hidden = at::zeros({active, padded_side, padded_side}, options);
  const auto w1 = conv1_weight.contiguous(), b1 = conv1_bias.contiguous();
  const auto w2 = conv2_weight.contiguous(), b2 = conv2_bias.contiguous();
  std::vector<const float*> first(active * channels), second(out_channels * active);
  std::vector<float> bias(active);
  for (int64_t j = 0; j < active; ++j) {
    bias[j] = b1.data_ptr<float>()[on[j]];
    for (int64_t c = 0; c < channels; ++c) first[j * channels + c] = w1.data_ptr<float>() + (on[j] * channels + c) * 9;
  }
  const bool wide = WIDE_VECTORS && side % 16 == 0;  // a row of 16 or 32: vectors of 16
  const auto convolve = stride == 1 ? (wide ? convolve3x3<1, 16> : convolve3x3<1, 8>)
                                    : (wide ? convolve3x3<2, 16> : convolve3x3<2, 8>);
  convolve(padded.data_ptr<float>(), padded.size(2), padded.size(1), channels, first.data(), bias.data(), active, side,
           true, hidden.data_ptr<float>() + padded_side + 1, padded_side * padded_side, padded_side);

  // conv2 reading the active channels, then the shortcut and ReLU.
  auto out = at::empty({1, out_channels, side, side}, options);
  for (int64_t o = 0; o < out_channels; ++o)
    for (int64_t j = 0; j < active; ++j) second[o * active + j] = w2.data_ptr<float>() + (o * middle + on[j]) * 9;
  float* y = out.data_ptr<float>();
  (wide ? convolve3x3<1, 16> : convolve3x3<1, 8>)(hidden.data_ptr<float>(), padded_side, padded_side, active,
                                                  second.data(), b2.data_ptr<float>(), out_channels, side, false, y,
                                                  side * side, side);
  const float* input = map.data_ptr<float>();
  for (int64_t c = 0; c < out_channels; ++c)
    for (int64_t i = 0; i < side; ++i)
      for (int64_t j = 0; j < side; ++j) {
        float& value = y[(c * side + i) * side + j];
        if (c < channels) value += input[(c * side_in + i * stride) * side_in + j * stride];
        value = std::max(value, 0.f);
      }
  return {out, probabilities};
}

}  // namespace

TORCH_LIBRARY(dynviz, m) {
  m.def("gate_logits(Tensor x, Tensor fc1_weight, Tensor fc1_bias, Tensor fc2_weight, Tensor fc2_bias) -> Tensor");
  m.def(
      "dynconv_basic_block(Tensor x, Tensor unit_weight, Tensor unit_context, Tensor unit_bias, float threshold, "
      "Tensor conv1_weight, Tensor conv1_bias, Tensor conv2_weight, Tensor conv2_bias, int stride) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "dynconv_mbconv_block(Tensor x, Tensor unit_weight, Tensor unit_context, Tensor unit_bias, float threshold, "
      "Tensor expand_weight, Tensor expand_bias, Tensor depthwise_weight, Tensor depthwise_bias, "
      "Tensor project_weight, Tensor project_bias) -> (Tensor, Tensor, Tensor)");
  m.def(
      "channel_gated_basic_block(Tensor x, Tensor fc1_weight, Tensor fc1_bias, Tensor fc2_weight, Tensor fc2_bias, "
      "float threshold, Tensor conv1_weight, Tensor conv1_bias, Tensor conv2_weight, Tensor conv2_bias, int stride) "
      "-> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(dynviz, CPU, m) {
  m.impl("gate_logits", &gate_logits);
  m.impl("dynconv_basic_block", &dynconv_basic_block);
  m.impl("dynconv_mbconv_block", &dynconv_mbconv_block);
  m.impl("channel_gated_basic_block", &channel_gated_basic_block);
}
