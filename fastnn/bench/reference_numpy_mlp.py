"""An independent, hand-written NumPy MLP training loop: the honesty check on the baseline.

fastnn's ``numpy`` backend is the "pure NumPy" speed baseline that the Numba backend
is measured against. A baseline is only honest if it is about as fast as what a
competent person would write by hand, so this module is exactly that, written without
looking at or importing any fastnn kernel:

* one ``np.matmul`` per layer per direction, on the whole batch;
* every intermediate preallocated once per batch size and written with ``out=``
  (a ragged last batch uses the leading rows of the same buffers);
* all parameters in one flat float32 buffer, so plain SGD is two in-place passes;
* no per-sample Python: the only Python loop runs over batches and layers.

Network: dense layers with ReLU between them, linear last layer, softmax
cross-entropy with the mean over the batch, plain SGD (no momentum, no decay):
the same math as fastnn with ``optimizer=SGD(lr)``. ``fastnn-bench`` times it beside
the fastnn backends (it ships inside the package, so an installed fastnn has the
column too); ``tests/test_bench_smoke.py`` checks that it computes the same losses as
fastnn's NumPy backend. It imports nothing from fastnn, and nothing in fastnn imports
it except the benchmark's runner.
"""

import numpy as np


class ReferenceMLP:
    """A ReLU MLP trained with mini-batch SGD on float32 data.

    Parameters
    ----------
    weights : list of (ndarray, ndarray)
        Initial (W, b) per dense layer, shapes (n_in, n_out) and (n_out,); copied.
    lr : float
        SGD learning rate.
    """

    def __init__(self, weights, lr):
        self.lr = float(lr)
        self.sizes = [weights[0][0].shape[0]] + [w.shape[1] for w, _ in weights]
        n = sum(w.size + b.size for w, b in weights)
        self.params = np.empty(n, dtype=np.float32)
        self.grads = np.zeros(n, dtype=np.float32)
        self.W, self.b, self.dW, self.db = [], [], [], []
        off = 0
        for w, b in weights:
            for src, views, gviews in ((w, self.W, self.dW), (b, self.b, self.db)):
                k = src.size
                self.params[off : off + k] = src.ravel()
                views.append(self.params[off : off + k].reshape(src.shape))
                gviews.append(self.grads[off : off + k].reshape(src.shape))
                off += k
        self._batch = 0

    def _buffers(self, batch_size):
        """(Re)allocate per-batch activations only when the batch size changes."""
        if batch_size == self._batch:
            return
        self._batch = batch_size
        self.xb = np.empty((batch_size, self.sizes[0]), dtype=np.float32)
        self.yb = np.empty(batch_size, dtype=np.int64)
        # acts[0] is the input batch; acts[i + 1] the output of layer i (logits last).
        self.acts = [self.xb] + [np.empty((batch_size, n), dtype=np.float32) for n in self.sizes[1:]]
        # deltas[i] is d loss / d (pre-activation output of layer i).
        self.deltas = [np.empty((batch_size, n), dtype=np.float32) for n in self.sizes[1:]]
        self.masks = [np.empty((batch_size, n), dtype=bool) for n in self.sizes[1:-1]]
        self.rowmax = np.empty((batch_size, 1), dtype=np.float32)
        self.rowsum = np.empty((batch_size, 1), dtype=np.float32)
        self.pred = np.empty(batch_size, dtype=np.int64)
        self.rows = np.arange(batch_size)

    def train_step(self, x, y, idx):
        """One SGD step on rows ``idx`` of (x, y); returns (mean loss, n correct)."""
        m = len(idx)
        xb, yb = self.xb[:m], self.yb[:m]
        np.take(x, idx, axis=0, out=xb)
        np.take(y, idx, out=yb)
        n_layers = len(self.W)
        # Forward: z = a @ W + b, ReLU in place on hidden layers.
        for i in range(n_layers):
            a, z = self.acts[i][:m], self.acts[i + 1][:m]
            np.matmul(a, self.W[i], out=z)
            z += self.b[i]
            if i < n_layers - 1:
                np.maximum(z, 0.0, out=z)
        # Softmax cross-entropy: stable log-sum-exp, then the gradient of the mean loss.
        logits, p = self.acts[-1][:m], self.deltas[-1][:m]
        rows, mx, s = self.rows[:m], self.rowmax[:m], self.rowsum[:m]
        np.argmax(logits, axis=1, out=self.pred[:m])
        correct = int(np.count_nonzero(self.pred[:m] == yb))
        np.max(logits, axis=1, keepdims=True, out=mx)
        np.subtract(logits, mx, out=p)
        np.exp(p, out=p)
        np.sum(p, axis=1, keepdims=True, out=s)
        loss = float(np.mean(np.log(s[:, 0]) + mx[:, 0] - logits[rows, yb]))
        p /= s
        p[rows, yb] -= 1.0
        p *= np.float32(1.0 / m)
        # Backward: dW = a.T @ delta, db = sum(delta), delta_prev = (delta @ W.T) * relu'.
        for i in range(n_layers - 1, -1, -1):
            a, d = self.acts[i][:m], self.deltas[i][:m]
            np.matmul(a.T, d, out=self.dW[i])
            np.sum(d, axis=0, out=self.db[i])
            if i > 0:  # the input layer's dx is never needed
                prev = self.deltas[i - 1][:m]
                np.matmul(d, self.W[i].T, out=prev)
                mask = self.masks[i - 1][:m]
                np.greater(a, 0.0, out=mask)
                np.multiply(prev, mask, out=prev)
        # SGD on the flat buffer: two in-place passes over all parameters.
        self.grads *= np.float32(-self.lr)
        self.params += self.grads
        return loss, correct

    def train_steps(self, x, y, order, start, n_steps, batch_size, step_loss=None, step_correct=None):
        """Run ``n_steps`` SGD steps on batches ``order[start + s*batch_size : ...]``.

        Mirrors fastnn's ``train_steps``: the last batch may be ragged; stops at the
        end of ``order``. Returns the number of steps applied.
        """
        self._buffers(batch_size)
        done = 0
        for s in range(n_steps):
            lo = start + s * batch_size
            if lo >= len(order):
                break
            loss, correct = self.train_step(x, y, order[lo : lo + batch_size])
            if step_loss is not None:
                step_loss[s], step_correct[s] = loss, correct
            done += 1
        return done
