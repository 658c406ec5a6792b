// Host-only check of the shared-memory layouts that the dense backward kernels plan for the sweep's shapes:
// the tiles of a pipeline stage do not overlap, every fragment read stays inside the window its stage
// copied, and the regions (resident weights, stages, staging tile) are disjoint and fit the device. A read
// that strays past its window into the next stage (which is being filled while this one is computed) would
// be a shared-memory race that leaves the results right. This check makes no device calls: the plans come
// from make_plan with an H100's limits (132 SMs, 227 KB per block, 228 KB per SM).
//
//   nvcc -std=c++17 -O1 --expt-relaxed-constexpr -I csrc -I <jax.ffi.include_dir()> \
//       benchmarks/bwd_smem_bounds.cu -o /tmp/bwd_smem_bounds && /tmp/bwd_smem_bounds
#include <cstdio>
#include <vector>

#include "cuda/dgrad_implicit_gemm.cuh"
#include "cuda/wgrad_implicit_gemm.cuh"

namespace jax_conv1d::cuda {
const DeviceLimits& device_limits() {
  static const DeviceLimits h100{132, 227 * 1024, 228 * 1024, 9};
  return h100;
}
}  // namespace jax_conv1d::cuda

using namespace jax_conv1d;
using namespace jax_conv1d::cuda;

namespace {

int failures = 0, plans = 0;

void fail(const char* what, const char* family, const char* op, int idx, bool ncw) {
  std::printf("FAIL %-7s %-6s case %2d %s: %s\n", family, op, idx, ncw ? "NCW" : "NWC", what);
  ++failures;
}

#define CHECK(cond)                                 \
  do {                                              \
    if (!(cond)) fail(#cond, family, op, idx, ncw); \
  } while (0)

template <class Op>
void check_dgrad(const Conv1dParams& p, const char* op, int idx) {
  using T = typename Op::T;
  const char* family = "dgrad";
  const bool ncw = p.layout == Layout::kNCW;
  dgrad_gemm::Plan plan;
  if (!dgrad_gemm::make_plan<Op>(p, &plan)) return;  // not this kernel's shape: the direct kernel runs
  ++plans;
  const auto& q = plan.prm;
  const int sz = sizeof(T), s = static_cast<int>(p.stride);
  const int o_pad = q.o_chunks * q.bo;
  // dy windows of one stage: segment j's rows (NWC) or columns (NCW) end before segment j+1's start.
  for (int j = 0; j < q.nseg; ++j) {
    if (ncw) {
      const int end = q.seg_base[j] + q.seg_chunks[j] * q.vec_dy;
      CHECK(q.seg_chunks[j] * q.vec_dy >= q.seg_len[j] + q.vec_dy - 1);  // room for any copy shift
      CHECK(j + 1 == q.nseg || end <= q.seg_base[j + 1]);
      CHECK(end <= q.dy_pitch);
    } else {
      CHECK(j + 1 == q.nseg || q.seg_base[j] + q.seg_len[j] <= q.seg_base[j + 1]);
      CHECK(q.seg_chunks[j] * q.vec_dy <= q.dy_pitch);
      CHECK((q.seg_base[j] + q.seg_len[j]) * q.dy_pitch <= q.dy_elems);
    }
  }
  if (ncw) CHECK(q.bo * q.dy_pitch <= q.dy_elems);
  // The warps of a phase cover q 0 .. bq - 1 (q_off + 31 at most) and channels 0 .. bc - 1 (c_off + 16*mt).
  CHECK((q.warps_per_phase - 1) / q.warps_m * 32 + 31 <= q.bq - 1);
  CHECK(((q.warps_per_phase - 1) % q.warps_m) * plan.mt * 16 + plan.mt * 16 <= q.bc);
  CHECK(q.slots * q.warps_per_phase == dgrad_gemm::kWarps);
  // B reads of tap tj: positions tap_pos .. tap_pos + bq - 1 of its segment (plus the copy shift, NCW).
  for (int ph = 0; ph < q.nphase; ++ph)
    for (int tj = q.phase_first[ph]; tj < q.phase_first[ph] + q.phase_count[ph]; ++tj) {
      const int seg = q.tap_seg[tj];
      CHECK(q.tap_pos[tj] >= 0 && q.tap_pos[tj] + q.bq <= q.seg_len[seg]);
      CHECK(q.tap_k[tj] >= 0 && q.tap_k[tj] < p.kernel_size);
    }
  // A: resident rows (k*bc + c) of o_pad weights, or the streamed chunk's rows of bo; ldmatrix rows 16-byte aligned.
  if (plan.stream_w) {
    CHECK(q.ws_pitch >= q.bo && (q.ws_pitch * sz) % 16 == 0);
    CHECK(int64_t(p.kernel_size) * q.bc * q.ws_pitch <= q.ws_elems);
    CHECK(q.stage_elems >= q.dy_elems + q.ws_elems);
    CHECK((q.dy_elems * sz) % 16 == 0);
  } else {
    CHECK(q.w_pitch >= o_pad && (q.w_pitch * sz) % 16 == 0);
    CHECK(int64_t(p.kernel_size) * q.bc * q.w_pitch <= q.w_elems);
    CHECK(q.stage_elems >= q.dy_elems);
  }
  // Staging tile (stride > 1 unless direct stores): a row per channel (NCW) or position (NWC).
  if (!q.direct_stores) {
    if (ncw) CHECK(q.st_pitch >= s * q.bq && q.st_elems >= q.bc * q.st_pitch);
    else CHECK(q.st_pitch >= q.bc && q.st_elems >= s * q.bq * q.st_pitch);
  }
  // Regions: weights, then the stages, then the staging tile, inside the block's allocation.
  CHECK(q.stages_offset >= int64_t(q.w_elems) * sz && q.stages_offset % 16 == 0);
  CHECK(q.staging_offset >= q.stages_offset + int64_t(q.nstage) * q.stage_elems * sz);
  CHECK(plan.smem >= size_t(q.staging_offset) + size_t(q.st_elems) * 4);
  CHECK(plan.smem <= size_t(device_limits().smem_optin));
  CHECK(q.nstage >= 2 && q.nstage <= 4);
}

template <class Op>
void check_wgrad(const Conv1dParams& p, const char* op, int idx) {
  using T = typename Op::T;
  const char* family = "wgrad";
  const bool ncw = p.layout == Layout::kNCW;
  wgrad_gemm::Plan plan;
  if (!wgrad_gemm::make_plan<Op>(p, &plan)) return;
  ++plans;
  const auto& q = plan.prm;
  const int sz = sizeof(T), bm = 32 * plan.mt;
  if (ncw) {
    // dy rows of bt positions from t0 (a multiple of bt, so no copy shift when dy's rows are whole vectors).
    CHECK(q.bt % q.vec_dy == 0 && p.y_o % q.vec_dy == 0 && p.y_n % q.vec_dy == 0);
    CHECK(q.dy_pitch >= q.bt && bm * q.dy_pitch <= q.dy_elems);
    for (int j = 0; j < q.nseg; ++j) {
      const int end = q.seg_base[j] + static_cast<int>(round_up(q.seg_len[j] + q.vec_x - 1, q.vec_x));
      CHECK(j + 1 == q.nseg || end <= q.seg_base[j + 1]);
      CHECK(end <= q.x_pitch);
    }
    CHECK(q.bch * q.x_pitch <= q.x_elems);
  } else {
    CHECK(q.dy_pitch >= round_up(bm, q.vec_dy) && q.bt * q.dy_pitch <= q.dy_elems);
    CHECK(q.x_pitch >= round_up(q.bch, q.vec_x));
    for (int j = 0; j < q.nseg; ++j) {
      CHECK(j + 1 == q.nseg || q.seg_base[j] + q.seg_len[j] * q.x_pitch <= q.seg_base[j + 1]);
      CHECK(q.seg_base[j] + q.seg_len[j] * q.x_pitch <= q.x_elems);
    }
  }
  // B reads of tap j: positions tap_off + k*stride, k < bt, of its segment.
  for (int j = 0; j < q.kb; ++j)
    CHECK(q.tap_off[j] >= 0 && q.tap_off[j] + (q.bt - 1) * p.stride < q.seg_len[q.tap_seg[j]]);
  CHECK(((q.dy_elems + q.x_elems) * sz) % 16 == 0);
  CHECK(plan.smem == size_t(q.dy_elems + q.x_elems) * sz * q.nstage);
  CHECK(plan.smem <= size_t(device_limits().smem_optin));
  CHECK(q.nstage >= 2 && q.nstage <= 4);
}

struct Case {
  int64_t n, c, o, l, k, s, d, lo, hi, g;
};

// benchmarks/bwd_check.py's SWEEP (N, C, O, L, K, stride, dilation, (lo, hi), groups), dense and grouped only
// (depthwise shapes take the depthwise kernels; make_plan is still checked for any it accepts).
const std::vector<Case> kSweep = {
    {2, 16, 32, 97, 3, 1, 1, 0, 0, 1},      {2, 64, 128, 300, 3, 3, 4, 0, 0, 1},   {3, 64, 128, 301, 3, 3, 4, 2, 5, 1},
    {2, 24, 40, 257, 5, 2, 3, 4, 1, 1},     {1, 8, 16, 130, 7, 4, 2, 3, 3, 1},     {2, 32, 48, 211, 2, 1, 64, 64, 0, 1},
    {2, 128, 256, 200, 2, 1, 16, 16, 0, 1}, {2, 12, 20, 150, 4, 5, 7, -3, 2, 1},   {2, 16, 16, 64, 3, 1, 1, -5, -4, 1},
    {1, 40, 24, 333, 1, 1, 1, 0, 0, 1},     {2, 6, 10, 90, 3, 2, 1, 1, 1, 1},      {2, 32, 64, 180, 3, 8, 1, 0, 0, 1},
    {2, 16, 24, 120, 6, 4, 2, 5, 5, 1},     {2, 64, 64, 160, 3, 1, 2, 2, 2, 4},    {2, 96, 48, 140, 5, 2, 3, 6, 6, 3},
    {2, 8, 8, 400, 9, 1, 5, 20, 20, 8},     {2, 64, 64, 300, 7, 1, 8, 24, 24, 64}, {3, 40, 40, 131, 4, 1, 1, 3, 0, 40},
    {2, 16, 16, 77, 5, 3, 2, 4, -2, 16},    {2, 10, 10, 400, 3, 2, 70, 0, 0, 10},
    {2, 20, 20, 333, 2, 1, 200, 200, 0, 20},
    {2, 16, 32, 600, 3, 1, 150, 300, 0, 1}, {1, 33, 65, 123, 3, 2, 2, 1, 1, 1},   {1, 7, 9, 31, 3, 1, 1, 1, 1, 1},
    {1, 16, 1030, 60, 3, 1, 1, 1, 1, 1},    {4, 8, 16, 200000, 3, 3, 4, 0, 0, 1},
    // the issue's full-size dense shapes: headline, WaveNet layers
    {64, 64, 128, 524280, 3, 3, 4, 0, 0, 1}, {16, 128, 256, 65536, 2, 1, 64, 64, 0, 1},
    {16, 128, 256, 65536, 2, 1, 512, 512, 0, 1}, {16, 128, 256, 65536, 2, 1, 1, 1, 0, 1},
};

}  // namespace

int main() {
  for (size_t idx = 0; idx < kSweep.size(); ++idx) {
    const Case& c = kSweep[idx];
    for (Layout layout : {Layout::kNCW, Layout::kNWC}) {
      for (Precision prec : {Precision::kDefault, Precision::kAccurate}) {
        Conv1dParams p;
        p.batch = c.n, p.in_channels = c.c, p.out_channels = c.o, p.in_length = c.l, p.kernel_size = c.k;
        p.stride = c.s, p.dilation = c.d, p.pad_lo = c.lo, p.groups = c.g, p.layout = layout, p.precision = prec;
        p.out_length = conv_out_length(c.l, c.k, c.s, c.d, c.lo, c.hi);
        if (p.out_length <= 0) continue;
        set_strides(p);
        const int i = static_cast<int>(idx);
        if (prec == Precision::kAccurate) {
          check_dgrad<Mma3xTf32>(p, "3xtf32", i);
          check_wgrad<Mma3xTf32>(p, "3xtf32", i);
          continue;
        }
        check_dgrad<MmaTf32>(p, "tf32", i);
        check_dgrad<MmaBf16>(p, "bf16", i);
        check_dgrad<MmaF16>(p, "f16", i);
        check_wgrad<MmaTf32>(p, "tf32", i);
        check_wgrad<MmaBf16>(p, "bf16", i);
        check_wgrad<MmaF16>(p, "f16", i);
      }
    }
  }
  std::printf("%d plans checked, %d failures\n", plans, failures);
  return failures == 0 ? 0 : 1;
}
