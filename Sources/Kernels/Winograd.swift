// 3×3 stride-1 convolutions by Winograd's minimal filtering F(4×4, 3×3) (Lavin & Gray, 2016): each 4×4 output tile
// needs 36 multiplications per input/output channel pair instead of 144, done as 36 matrix products. The weight,
// input and output transforms use the standard points 0, ±1, ±2, ∞; in float32 the result differs from a direct
// convolution by a few 1e-7 relative, far inside the VQ decoder's 1e-4 parity tolerance.
//
// The transforms are separable: the input and output ones run their first pass over whole rows of a tile row (or
// across all its tiles) and their second pass tile by tile, reading and writing each of the 36 planes in contiguous
// runs of tiles, straight from and into the planes — no per-tile gathers, no staging copies. Weights go through
// small local buffers, a run of filters at a time.

extension Kernels {
    /// Whether Winograd pays off for this size: the transforms cost more than they save on small images.
    static func winogradPays(height: Int, width: Int) -> Bool { height * width >= 32 * 32 }

    /// 3×3 convolution with stride 1 and zero padding 1 of one NCHW image, via Winograd F(4×4, 3×3).
    /// Same contract as `conv2d` for that case.
    public static func conv3x3Winograd(
        input: UnsafePointer<Float>, channels cin: Int, height h: Int, width w: Int,
        weight: UnsafePointer<Float>, outChannels cout: Int,
        bias: UnsafePointer<Float>?, output: UnsafeMutablePointer<Float>
    ) {
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
                sgemm(
                    m: cout, n: tiles, k: cin, a: u + xi * cout * cin, lda: cin, b: v + xi * cin * tiles, ldb: tiles,
                    transposeB: false, c: m + xi * cout * tiles, ldc: tiles)
            }
            transformOutput(
                m, cout: cout, h: h, w: w, firstTileRow: band, tileRows: rows, tilesW: tilesW, bias: bias,
                into: output)
            band += rows
        }
    }

    /// U[ξ][cout][cin] = (G g Gᵀ)[ξ] for every 3×3 filter g.
    static func transformWeights(
        _ weight: UnsafePointer<Float>, cin: Int, cout: Int, into u: UnsafeMutablePointer<Float>
    ) {
        let us = SharedPointer(u), ws = UncheckedSendable(weight)
        let block = 64
        // Multiplying by the reciprocals instead of dividing: within an ulp per term, far faster than division.
        let sixth: Float = 1 / 6, twelfth: Float = 1 / 12, twentyFourth: Float = 1 / 24
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
                        var t:
                            (
                                Float, Float, Float, Float, Float, Float, Float, Float, Float,
                                Float, Float, Float, Float, Float, Float, Float, Float, Float
                            ) =
                                (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
                        withUnsafeMutableBytes(of: &t) { raw in
                            let tp = raw.baseAddress!.assumingMemoryBound(to: Float.self)
                            for c in 0..<3 {
                                let g0 = g[c], g1 = g[3 + c], g2 = g[6 + c]
                                tp[c] = g0 * 0.25
                                tp[3 + c] = -(g0 + g1 + g2) * sixth
                                tp[6 + c] = -(g0 - g1 + g2) * sixth
                                tp[9 + c] = g0 * twentyFourth + g1 * twelfth + g2 * sixth
                                tp[12 + c] = g0 * twentyFourth - g1 * twelfth + g2 * sixth
                                tp[15 + c] = g2
                            }
                            for r in 0..<6 {
                                let g0 = tp[r * 3], g1 = tp[r * 3 + 1], g2 = tp[r * 3 + 2]
                                let dst = local + r * 6 * block + j
                                dst[0] = g0 * 0.25
                                dst[block] = -(g0 + g1 + g2) * sixth
                                dst[2 * block] = -(g0 - g1 + g2) * sixth
                                dst[3 * block] = g0 * twentyFourth + g1 * twelfth + g2 * sixth
                                dst[4 * block] = g0 * twentyFourth - g1 * twelfth + g2 * sixth
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
    static func transformInput(
        _ input: UnsafePointer<Float>, cin: Int, h: Int, w: Int, firstTileRow: Int,
        tileRows: Int, tilesW: Int, into v: UnsafeMutablePointer<Float>
    ) {
        let vs = SharedPointer(v), inp = UncheckedSendable(input)
        let tiles = tileRows * tilesW
        Parallel.chunks(cin, cost: tiles * 200) { range in
            // Six padded input rows of the tile row, and t = Bᵀ d computed on whole rows at once (six rows of pw).
            let pw = tilesW * 4 + 2
            let rowsBuffer = UnsafeMutablePointer<Float>.allocate(capacity: 6 * pw)
            let t = UnsafeMutablePointer<Float>.allocate(capacity: 6 * pw)
            defer {
                rowsBuffer.deallocate()
                t.deallocate()
            }
            for c in range {
                let plane = inp.value + c * h * w
                for tr in 0..<tileRows {
                    let y0 = (firstTileRow + tr) * 4 - 1
                    for dy in 0..<6 {
                        let y = y0 + dy
                        let dst = rowsBuffer + dy * pw
                        dst[0] = 0
                        if y >= 0 && y < h {
                            (dst + 1).update(from: plane + y * w, count: w)
                            (dst + 1 + w).update(repeating: 0, count: pw - 1 - w)
                        } else {
                            dst.update(repeating: 0, count: pw)
                        }
                    }
                    // Bᵀ along the six rows: contiguous in x, so the loop vectorises across every column of the band.
                    let d0 = rowsBuffer, d1 = rowsBuffer + pw, d2 = rowsBuffer + 2 * pw, d3 = rowsBuffer + 3 * pw,
                        d4 = rowsBuffer + 4 * pw, d5 = rowsBuffer + 5 * pw
                    for x in 0..<pw {
                        t[x] = 4 * d0[x] - 5 * d2[x] + d4[x]
                        t[pw + x] = -4 * d1[x] - 4 * d2[x] + d3[x] + d4[x]
                        t[2 * pw + x] = 4 * d1[x] - 4 * d2[x] - d3[x] + d4[x]
                        t[3 * pw + x] = -2 * d1[x] - d2[x] + 2 * d3[x] + d4[x]
                        t[4 * pw + x] = 2 * d1[x] - d2[x] - 2 * d3[x] + d4[x]
                        t[5 * pw + x] = 4 * d1[x] - 5 * d3[x] + d5[x]
                    }
                    // B along each tile's six columns, written straight into the 36 planes (contiguous in tiles).
                    for r in 0..<6 {
                        let a = t + r * pw
                        let base = vs.p + (r * 6 * cin + c) * tiles + tr * tilesW
                        let plane = cin * tiles
                        let v0 = base, v1 = base + plane, v2 = base + 2 * plane, v3 = base + 3 * plane,
                            v4 = base + 4 * plane, v5 = base + 5 * plane
                        for tc in 0..<tilesW {
                            let q = a + 4 * tc
                            let a0 = q[0], a1 = q[1], a2 = q[2], a3 = q[3], a4 = q[4], a5 = q[5]
                            v0[tc] = 4 * a0 - 5 * a2 + a4
                            v1[tc] = -4 * a1 - 4 * a2 + a3 + a4
                            v2[tc] = 4 * a1 - 4 * a2 - a3 + a4
                            v3[tc] = -2 * a1 - a2 + 2 * a3 + a4
                            v4[tc] = 2 * a1 - a2 - 2 * a3 + a4
                            v5[tc] = 4 * a1 - 5 * a3 + a5
                        }
                    }
                }
            }
        }
    }

    /// Y = Aᵀ M A per output channel and tile, plus bias, cropped at the image edge, for one band of tiles.
    static func transformOutput(
        _ m: UnsafeMutablePointer<Float>, cout: Int, h: Int, w: Int, firstTileRow: Int,
        tileRows: Int, tilesW: Int, bias: UnsafePointer<Float>?,
        into output: UnsafeMutablePointer<Float>
    ) {
        let ms = SharedPointer(m), out = SharedPointer(output), bs = UncheckedSendable(bias)
        let tiles = tileRows * tilesW
        Parallel.chunks(cout, cost: tiles * 150) { range in
            // t = Aᵀ M for one tile row, [4][6][tilesW], computed across tiles; then each output row of the tiles.
            let t = UnsafeMutablePointer<Float>.allocate(capacity: 24 * tilesW)
            let ow = tilesW * 4
            let rowOut = UnsafeMutablePointer<Float>.allocate(capacity: ow)
            defer {
                t.deallocate()
                rowOut.deallocate()
            }
            let plane = cout * tiles
            for o in range {
                let b: Float = bs.value?[o] ?? 0
                let image = out.p + o * h * w
                for tr in 0..<tileRows {
                    let base = ms.p + o * tiles + tr * tilesW
                    for k in 0..<6 {
                        let m0 = base + k * plane, m1 = base + (6 + k) * plane, m2 = base + (12 + k) * plane,
                            m3 = base + (18 + k) * plane, m4 = base + (24 + k) * plane, m5 = base + (30 + k) * plane
                        let t0 = t + k * tilesW, t1 = t + (6 + k) * tilesW, t2 = t + (12 + k) * tilesW,
                            t3 = t + (18 + k) * tilesW
                        for tc in 0..<tilesW {
                            t0[tc] = m0[tc] + m1[tc] + m2[tc] + m3[tc] + m4[tc]
                            t1[tc] = m1[tc] - m2[tc] + 2 * m3[tc] - 2 * m4[tc]
                            t2[tc] = m1[tc] + m2[tc] + 4 * m3[tc] + 4 * m4[tc]
                            t3[tc] = m1[tc] - m2[tc] + 8 * m3[tc] - 8 * m4[tc] + m5[tc]
                        }
                    }
                    let y0 = (firstTileRow + tr) * 4
                    for j in 0..<4 where y0 + j < h {
                        // Straight into the image row when the tiles cover it exactly, else through a row buffer.
                        let direct = ow == w
                        let dst = direct ? image + (y0 + j) * w : rowOut
                        let a0 = t + (j * 6) * tilesW, a1 = a0 + tilesW, a2 = a0 + 2 * tilesW, a3 = a0 + 3 * tilesW,
                            a4 = a0 + 4 * tilesW, a5 = a0 + 5 * tilesW
                        for tc in 0..<tilesW {
                            let q = dst + 4 * tc
                            q[0] = a0[tc] + a1[tc] + a2[tc] + a3[tc] + a4[tc] + b
                            q[1] = a1[tc] - a2[tc] + 2 * a3[tc] - 2 * a4[tc] + b
                            q[2] = a1[tc] + a2[tc] + 4 * a3[tc] + 4 * a4[tc] + b
                            q[3] = a1[tc] - a2[tc] + 8 * a3[tc] - 8 * a4[tc] + a5[tc] + b
                        }
                        if !direct { (image + (y0 + j) * w).update(from: rowOut, count: w) }
                    }
                }
            }
        }
    }
}
