// 3×3 stride-1 convolutions by Winograd's minimal filtering F(4×4, 3×3) (Lavin & Gray, 2016): each 4×4 output tile
// needs 36 multiplications per input/output channel pair instead of 144, done as 36 matrix products. The weight,
// input and output transforms use the standard points 0, ±1, ±2, ∞; in float32 the result differs from a direct
// convolution by a few 1e-7 relative, far inside the VQ decoder's 1e-4 parity tolerance.
//
// The transforms work on runs of consecutive filters or tiles through small local buffers, so that every one of the
// 36 transformed planes is written and read in contiguous runs rather than one float at a time.

extension Kernels {
    /// Whether Winograd pays off for this size: the transforms cost more than they save on small images.
    static func winogradPays(height: Int, width: Int) -> Bool { height * width >= 32 * 32 }

    /// 3×3 convolution with stride 1 and zero padding 1 of one NCHW image, via Winograd F(4×4, 3×3).
    /// Same contract as `conv2d` for that case.
    public static func conv3x3Winograd(input: UnsafePointer<Float>, channels cin: Int, height h: Int, width w: Int,
                                       weight: UnsafePointer<Float>, outChannels cout: Int,
                                       bias: UnsafePointer<Float>?, output: UnsafeMutablePointer<Float>) {
        let uCount = 36 * cout * cin
        let u = ScratchPool.shared.borrow(uCount)
        defer { ScratchPool.shared.giveBack(u, uCount) }
        transformWeights(weight, cin: cin, cout: cout, into: u)
        let tilesH = (h + 3) / 4, tilesW = (w + 3) / 4
        // Bands of tile rows keep the transformed buffers around 16 MiB.
        let bandRows = max(1, min(tilesH, (4 << 20) / max(1, 36 * max(cin, cout) * tilesW)))
        let vCount = 36 * cin * bandRows * tilesW, mCount = 36 * cout * bandRows * tilesW
        let v = ScratchPool.shared.borrow(vCount), m = ScratchPool.shared.borrow(mCount)
        defer {
            ScratchPool.shared.giveBack(v, vCount)
            ScratchPool.shared.giveBack(m, mCount)
        }
        var band = 0
        while band < tilesH {
            let rows = min(bandRows, tilesH - band)
            let tiles = rows * tilesW
            transformInput(input, cin: cin, h: h, w: w, firstTileRow: band, tileRows: rows, tilesW: tilesW, into: v)
            // M[ξ] = U[ξ] · V[ξ]: 36 products of [cout × cin] · [cin × tiles].
            for xi in 0..<36 {
                sgemm(m: cout, n: tiles, k: cin, a: u + xi * cout * cin, lda: cin, b: v + xi * cin * tiles, ldb: tiles,
                      transposeB: false, c: m + xi * cout * tiles, ldc: tiles)
            }
            transformOutput(m, cout: cout, h: h, w: w, firstTileRow: band, tileRows: rows, tilesW: tilesW, bias: bias,
                            into: output)
            band += rows
        }
    }

    /// U[ξ][cout][cin] = (G g Gᵀ)[ξ] for every 3×3 filter g.
    static func transformWeights(_ weight: UnsafePointer<Float>, cin: Int, cout: Int, into u: UnsafeMutablePointer<Float>) {
        let us = SharedPointer(u), ws = UncheckedSendable(weight)
        let block = 64
        Parallel.chunks(cout, cost: cin * 300) { range in
            let local = UnsafeMutablePointer<Float>.allocate(capacity: 36 * block)
            defer { local.deallocate() }
            for o in range {
                var i0 = 0
                while i0 < cin {
                    let n = min(block, cin - i0)
                    for j in 0..<n {
                        let g = ws.value + (o * cin + i0 + j) * 9
                        // t = G·g (6×3), then U = t·Gᵀ (6×6); local[ξ·block + j].
                        var t: (Float, Float, Float, Float, Float, Float, Float, Float, Float,
                                Float, Float, Float, Float, Float, Float, Float, Float, Float) =
                            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
                        withUnsafeMutableBytes(of: &t) { raw in
                            let tp = raw.baseAddress!.assumingMemoryBound(to: Float.self)
                            for c in 0..<3 {
                                let g0 = g[c], g1 = g[3 + c], g2 = g[6 + c]
                                tp[c] = g0 / 4
                                tp[3 + c] = -(g0 + g1 + g2) / 6
                                tp[6 + c] = -(g0 - g1 + g2) / 6
                                tp[9 + c] = g0 / 24 + g1 / 12 + g2 / 6
                                tp[12 + c] = g0 / 24 - g1 / 12 + g2 / 6
                                tp[15 + c] = g2
                            }
                            for r in 0..<6 {
                                let g0 = tp[r * 3], g1 = tp[r * 3 + 1], g2 = tp[r * 3 + 2]
                                let dst = local + r * 6 * block + j
                                dst[0] = g0 / 4
                                dst[block] = -(g0 + g1 + g2) / 6
                                dst[2 * block] = -(g0 - g1 + g2) / 6
                                dst[3 * block] = g0 / 24 + g1 / 12 + g2 / 6
                                dst[4 * block] = g0 / 24 - g1 / 12 + g2 / 6
                                dst[5 * block] = g2
                            }
                        }
                    }
                    for xi in 0..<36 {
                        (us.p + (xi * cout + o) * cin + i0).update(from: local + xi * block, count: n)
                    }
                    i0 += n
                }
            }
        }
    }

    /// V[ξ][cin][tile] = (Bᵀ d B)[ξ] for every 6×6 input patch d (zero outside the image), for one band of tiles.
    static func transformInput(_ input: UnsafePointer<Float>, cin: Int, h: Int, w: Int, firstTileRow: Int,
                               tileRows: Int, tilesW: Int, into v: UnsafeMutablePointer<Float>) {
        let vs = SharedPointer(v), inp = UncheckedSendable(input)
        let tiles = tileRows * tilesW
        Parallel.chunks(cin, cost: tiles * 200) { range in
            // Six padded input rows of the tile row, and the 36 transformed values of each tile in the row.
            let pw = tilesW * 4 + 2
            let rowsBuffer = UnsafeMutablePointer<Float>.allocate(capacity: 6 * pw)
            let local = UnsafeMutablePointer<Float>.allocate(capacity: 36 * tilesW)
            defer {
                rowsBuffer.deallocate()
                local.deallocate()
            }
            for c in range {
                let plane = inp.value + c * h * w
                for tr in 0..<tileRows {
                    let y0 = (firstTileRow + tr) * 4 - 1
                    for dy in 0..<6 {
                        let y = y0 + dy
                        let dst = rowsBuffer + dy * pw
                        dst.update(repeating: 0, count: pw)
                        if y >= 0 && y < h { (dst + 1).update(from: plane + y * w, count: w) }
                    }
                    for tc in 0..<tilesW {
                        let x0 = tc * 4
                        var t = (SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>(),
                                 SIMD8<Float>())
                        // t = Bᵀ d on the six columns of the patch, as 6-lane vectors (lanes 6, 7 unused).
                        func column(_ dy: Int) -> SIMD8<Float> {
                            let p = rowsBuffer + dy * pw + x0
                            return SIMD8(p[0], p[1], p[2], p[3], p[4], p[5], 0, 0)
                        }
                        let d0 = column(0), d1 = column(1), d2 = column(2), d3 = column(3), d4 = column(4),
                            d5 = column(5)
                        t.0 = 4 * d0 - 5 * d2 + d4
                        t.1 = -4 * d1 - 4 * d2 + d3 + d4
                        t.2 = 4 * d1 - 4 * d2 - d3 + d4
                        t.3 = -2 * d1 - d2 + 2 * d3 + d4
                        t.4 = 2 * d1 - d2 - 2 * d3 + d4
                        t.5 = 4 * d1 - 5 * d3 + d5
                        // V = t B on each row of t.
                        func row(_ r: Int, _ a: SIMD8<Float>) {
                            let dst = local + r * 6 * tilesW + tc
                            dst[0] = 4 * a[0] - 5 * a[2] + a[4]
                            dst[tilesW] = -4 * a[1] - 4 * a[2] + a[3] + a[4]
                            dst[2 * tilesW] = 4 * a[1] - 4 * a[2] - a[3] + a[4]
                            dst[3 * tilesW] = -2 * a[1] - a[2] + 2 * a[3] + a[4]
                            dst[4 * tilesW] = 2 * a[1] - a[2] - 2 * a[3] + a[4]
                            dst[5 * tilesW] = 4 * a[1] - 5 * a[3] + a[5]
                        }
                        row(0, t.0)
                        row(1, t.1)
                        row(2, t.2)
                        row(3, t.3)
                        row(4, t.4)
                        row(5, t.5)
                    }
                    for xi in 0..<36 {
                        (vs.p + (xi * cin + c) * tiles + tr * tilesW).update(from: local + xi * tilesW, count: tilesW)
                    }
                }
            }
        }
    }

    /// Y = Aᵀ M A per output channel and tile, plus bias, cropped at the image edge, for one band of tiles.
    static func transformOutput(_ m: UnsafeMutablePointer<Float>, cout: Int, h: Int, w: Int, firstTileRow: Int,
                                tileRows: Int, tilesW: Int, bias: UnsafePointer<Float>?,
                                into output: UnsafeMutablePointer<Float>) {
        let ms = SharedPointer(m), out = SharedPointer(output), bs = UncheckedSendable(bias)
        let tiles = tileRows * tilesW
        Parallel.chunks(cout, cost: tiles * 150) { range in
            let local = UnsafeMutablePointer<Float>.allocate(capacity: 36 * tilesW)
            let rowsOut = UnsafeMutablePointer<Float>.allocate(capacity: 4 * tilesW * 4)
            defer {
                local.deallocate()
                rowsOut.deallocate()
            }
            for o in range {
                let b: Float = bs.value?[o] ?? 0
                let plane = out.p + o * h * w
                for tr in 0..<tileRows {
                    for xi in 0..<36 {
                        local.advanced(by: xi * tilesW).update(from: ms.p + (xi * cout + o) * tiles + tr * tilesW,
                                                               count: tilesW)
                    }
                    let ow = tilesW * 4
                    for tc in 0..<tilesW {
                        func col(_ r: Int) -> SIMD8<Float> {
                            let p = local + r * 6 * tilesW + tc
                            return SIMD8(p[0], p[tilesW], p[2 * tilesW], p[3 * tilesW], p[4 * tilesW], p[5 * tilesW], 0, 0)
                        }
                        let m0 = col(0), m1 = col(1), m2 = col(2), m3 = col(3), m4 = col(4), m5 = col(5)
                        let t0 = m0 + m1 + m2 + m3 + m4
                        let t1 = m1 - m2 + 2 * m3 - 2 * m4
                        let t2 = m1 + m2 + 4 * m3 + 4 * m4
                        let t3 = m1 - m2 + 8 * m3 - 8 * m4 + m5
                        for (r, a) in [t0, t1, t2, t3].enumerated() {
                            let dst = rowsOut + r * ow + tc * 4
                            dst[0] = a[0] + a[1] + a[2] + a[3] + a[4] + b
                            dst[1] = a[1] - a[2] + 2 * a[3] - 2 * a[4] + b
                            dst[2] = a[1] + a[2] + 4 * a[3] + 4 * a[4] + b
                            dst[3] = a[1] - a[2] + 8 * a[3] - 8 * a[4] + a[5] + b
                        }
                    }
                    let y0 = (firstTileRow + tr) * 4
                    for r in 0..<4 where y0 + r < h {
                        (plane + (y0 + r) * w).update(from: rowsOut + r * ow, count: w)
                    }
                }
            }
        }
    }
}
