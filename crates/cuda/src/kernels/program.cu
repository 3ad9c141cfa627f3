// The step program: consecutive launches of the one-row staged products
// (`mvs_*`) and the attention, run by one persistent kernel with a grid
// barrier between them instead of one kernel each (src/program.rs).
//
// Why: a decode step of a small model is a chain of short kernels (SmolLM2:
// 153, ~4.3 us each on the clock against ~1-2 us of work), and between two
// of them the GPU drains one grid and starts the next: block launch, the
// prologue, the wait for the previous grid's writes. Here the blocks stay
// resident and meet at a barrier (one atomic per block and a spin on a
// generation word) before each op reads what the previous one wrote.
//
// Each op is the launch the queue recorded: its kernel (`kind`), its grid,
// and its parameters laid out as the kernel declares them (the host packs
// them with the same alignment, so a struct of the same members reads
// them). The program's blocks take the op's virtual blocks x + y gx + z gx
// gy in turn and run the kernel's own body for each (`Blk`): the same code,
// so the same values bit for bit as the separate launches.
//
// Every block of the program must be resident at once (the barrier spins):
// the host launches at most the occupancy's blocks per SM. A barrier that
// waits over 2 s gives up and sets the fault word (host memory the GPU
// writes through; the host turns it into an error), rather than hang.

#define PROGRAM_THREADS 256
#define PROGRAM_PARAM_BYTES 240

struct OpRec {
    int kind;
    u32 gx, gy, gz;
    u64 params[PROGRAM_PARAM_BYTES / 8];
};

// The ops: the program type's staged products, the attention over an f16
// cache (src/program.rs: `OpKind`).
#define OP_PLAIN 0
#define OP_QKV 1
#define OP_SWIGLU 2
#define OP_ATTENTION_F16 3

struct PlainParams {
    MvJob j;
    const float* x;
    int n_in, n;
    const float* g;
    float eps;
    int accumulate, kw;
};

struct QkvParams {
    MvJob jq, jk, jv;
    const float* x;
    int n_in, n;
    const float* g;
    float eps;
    const u32* positions;
    const float* inv_freq;
    int head_dim, n_rot, neox;
    void* kc;
    void* vc;
    u64 layer_off;
    const u32* slots;
    int kv_f16, kw, item0, item1;
};

struct SwigluParams {
    MvJob jg, ju;
    const float* x;
    int n_in, n;
    const float* g;
    float eps;
    int kw;
};

struct AttentionParams {
    const float* q;
    int q_cols;
    const u16* kc;
    const u16* vc;
    u64 layer_off;
    int row_width;
    const u32* positions;
    const u32* table_start;
    const u32* tables;
    int block_size, n_heads, n_kv_heads, head_dim;
    float scale;
    int window;
    float* out;
    int out_cols;
    float* scratch;
    int max_spans;
};

// The program is the kernel's one parameter (in the constant bank, so the
// bodies read their parameters from there as separate launches do, rather
// than holding them in registers): up to PROGRAM_OPS ops, 32 KiB in all.
#define PROGRAM_OPS 127
struct Program {
    u32* bar;
    u32* fault;
    int n_ops, pad;
    OpRec ops[PROGRAM_OPS];
};

static_assert(sizeof(QkvParams) <= PROGRAM_PARAM_BYTES, "OpRec params too small");
static_assert(sizeof(OpRec) == 256, "OpRec is 256 bytes (src/program.rs)");
static_assert(sizeof(Program) == 24 + 256 * PROGRAM_OPS, "Program layout (src/program.rs)");

template <int T, class Wait>
__device__ __forceinline__ void program_plain(const u64* params, Blk b, Wait w) {
    const PlainParams& p = *(const PlainParams*)params;
    mvs_plain_body<T>(b, w, p.j, p.x, p.n_in, p.g, p.eps, p.accumulate, p.kw);
}

template <int T, class Wait>
__device__ __forceinline__ void program_qkv(const u64* params, Blk b, Wait w) {
    const QkvParams& p = *(const QkvParams*)params;
    mvs_qkv_body<T>(b, w, p.jq, p.jk, p.jv, p.x, p.n_in, p.g, p.eps, p.positions, p.inv_freq,
                    p.head_dim, p.n_rot, p.neox, p.kc, p.vc, p.layer_off, p.slots, p.kv_f16, p.kw,
                    p.item0, p.item1);
}

template <int T, class Wait>
__device__ __forceinline__ void program_swiglu(const u64* params, Blk b, Wait w) {
    const SwigluParams& p = *(const SwigluParams*)params;
    mvs_swiglu_body<T>(b, w, p.jg, p.ju, p.x, p.n_in, p.g, p.eps, p.kw);
}

template <class Wait>
__device__ __forceinline__ void program_attention(const u64* params, Blk b, Wait w) {
    const AttentionParams& p = *(const AttentionParams*)params;
    attention_body<u16>(b, w, p.q, p.q_cols, p.kc, p.vc, p.layer_off, p.row_width, p.positions,
                        p.table_start, p.tables, p.block_size, p.n_heads, p.n_kv_heads,
                        p.head_dim, p.scale, p.window, p.out, p.out_cols, p.scratch, p.max_spans);
}

// One weight type's three products and the attention. (The four types
// under one switch spilled: registers of one type's loops held across the
// others'; so there is a program per type, and a run of launches of one
// type becomes one program.)
template <int T, class Wait>
__device__ __forceinline__ void program_op(int kind, const u64* params, Blk b, Wait w) {
    switch (kind) {
        case OP_PLAIN: program_plain<T>(params, b, w); break;
        case OP_QKV: program_qkv<T>(params, b, w); break;
        case OP_SWIGLU: program_swiglu<T>(params, b, w); break;
        default: program_attention(params, b, w); break;
    }
}

__device__ __forceinline__ u64 global_ns() {
    u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

// Grid barrier: bar[0] counts arrivals, bar[1] is the generation (two
// words a launch: src/program.rs). The last
// block to arrive resets the count, then moves the generation on; the others
// spin until it moves. The fences make every write before the barrier
// visible to every read after it.
__device__ __forceinline__ void grid_sync(u32* bar, u32* fault, u32 n_blocks) {
    __syncthreads();
    if (threadIdx.x == 0) {
        volatile u32* gen = bar + 1;
        const u32 g = atomicAdd(bar + 1, 0);
        __threadfence();
        if (atomicAdd(bar, 1) == n_blocks - 1) {
            atomicExch(bar, 0);
            __threadfence();
            atomicAdd(bar + 1, 1);
        } else {
            // After 1 ms a barrier also gives up if an earlier one did (the
            // fault word is host memory: read rarely), so a broken program
            // ends in seconds, not 2 s a barrier.
            const u64 t0 = global_ns();
            while (*gen == g) {
                const u64 t = global_ns() - t0;
                if (t > 1000000ull && *(volatile u32*)fault) break;
                if (t > 2000000000ull) {
                    *(volatile u32*)fault = 1;
                    break;
                }
            }
        }
        __threadfence();
    }
    __syncthreads();
}

// Op i's wait: PDL's for the first op, else the barrier after op i - 1;
// once per block and op. The bodies call it after their first weight loads,
// so a block fetches its next op's first weights before the barrier (taking
// the barrier first was slower still: docs/CUDA.md "Session 10").
struct ProgramWait {
    int op;
    u32* bar;
    u32* fault;
    bool* waited;
    __device__ __forceinline__ void operator()() const {
        if (*waited) return;
        *waited = true;
        if (op == 0) pdl_wait_then_trigger();
        else grid_sync(bar, fault, gridDim.x);
    }
};

template <int T>
__device__ __forceinline__ void program_body(const Program& prog) {
#if MVS_WARPS * 32 == PROGRAM_THREADS && ATT_THREADS == PROGRAM_THREADS
    const int n_ops = prog.n_ops;
    for (int i = 0; i < n_ops; i++) {
        const OpRec* op = prog.ops + i;
        const int kind = op->kind;
        const u32 gx = op->gx, gy = op->gy, total = gx * gy * op->gz;
        bool waited = false;
        const ProgramWait wait{i, prog.bar, prog.fault, &waited};
        for (u32 v = blockIdx.x; v < total; v += gridDim.x) {
            const Blk b{v % gx, (v / gx) % gy, v / (gx * gy), gx};
            program_op<T>(kind, op->params, b, wait);
            __syncthreads();
        }
        // A block with nothing to do in this op still takes its wait.
        wait();
    }
#else
    // Other block sizes (tuning defines): the host never fuses.
    pdl_wait_then_trigger();
#endif
}

#define SMELT_PROGRAM(SUFFIX, TT)                                                     \
    extern "C" __global__ void __launch_bounds__(PROGRAM_THREADS, 2)                  \
        step_program##SUFFIX(const __grid_constant__ Program prog) {                  \
        program_body<TT>(prog);                                                       \
    }

SMELT_PROGRAM(_q4_1, W_Q4_1)
SMELT_PROGRAM(_q8_0, W_Q8_0)
SMELT_PROGRAM(_q4_k, W_Q4_K)
SMELT_PROGRAM(_q6_k, W_Q6_K)
