/* tokenizer.h - the LLaMA SentencePiece BPE tokenizer, from tokenizer.model (SentencePiece's
 * ModelProto) or a Hugging Face tokenizer.json of the same kind.
 *
 * Encoding follows SentencePiece exactly: normalize (optional extra-whitespace removal, dummy
 * prefix, spaces escaped as U+2581), split into characters, merge the best-scoring adjacent pair
 * (ties to the leftmost) until none is in the vocabulary, then emit byte-fallback <0xNN> pieces
 * for what is left unknown. Text that looks like a control token ("<s>", "</s>", "<unk>") is
 * encoded as plain text: BOS and EOS only ever enter as ids. A loaded tokenizer is immutable and
 * may be shared by any number of threads. */
#ifndef ENGINE_TOKENIZER_H
#define ENGINE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* SentencePiece piece types, with ModelProto's numbering. */
enum tok_piece_type {
    TOK_PIECE_NORMAL = 1,
    TOK_PIECE_UNKNOWN = 2,
    TOK_PIECE_CONTROL = 3,
    TOK_PIECE_USER_DEFINED = 4,
    TOK_PIECE_UNUSED = 5,
    TOK_PIECE_BYTE = 6,
};

struct tok;

/* Parses a SentencePiece tokenizer.model held in memory. `name` prefixes errors.
 * Returns 0, -EINVAL (malformed protobuf, unsupported model type) with errstr.
 * Caller owns *out; free with tok_destroy. Thread-safe. */
int tok_load_spm_buf(const uint8_t *buf, size_t len, const char *name, struct tok **out,
                     char *errstr, size_t errstr_len);

/* Parses a Hugging Face tokenizer.json (model type BPE with byte_fallback, the LLaMA kind)
 * held in memory. Same contract as tok_load_spm_buf. */
int tok_load_hf_json_buf(const char *buf, size_t len, const char *name, struct tok **out,
                         char *errstr, size_t errstr_len);

/* Loads a tokenizer file: tokenizer.json when its content is a JSON object, else a
 * SentencePiece model. Returns 0 or a negative errno with errstr naming the file. */
int tok_load_file(const char *path, struct tok **out, char *errstr, size_t errstr_len);

/* Loads dir/tokenizer.model, else dir/tokenizer.json. Same contract as tok_load_file. */
int tok_load_dir(const char *dir, struct tok **out, char *errstr, size_t errstr_len);

/* No-op on NULL. */
void tok_destroy(struct tok *t);

/* Vocabulary facts. Thread-safe. Special ids are -1 when the model has none. */
int32_t tok_n_vocab(const struct tok *t);
int32_t tok_bos_id(const struct tok *t);
int32_t tok_eos_id(const struct tok *t);
int32_t tok_unk_id(const struct tok *t);

/* The piece text of `id` (with U+2581 for spaces, "<0x0A>" for byte pieces), its score and type;
 * NULL / 0 / 0 for an id out of range. Borrowed, valid until tok_destroy. Thread-safe. */
const char *tok_piece(const struct tok *t, int32_t id);
float tok_score(const struct tok *t, int32_t id);
enum tok_piece_type tok_type(const struct tok *t, int32_t id);

/* Encodes `len` bytes of text, prepending BOS when add_bos. Invalid UTF-8 bytes are handled as
 * SentencePiece does (each becomes U+FFFD, then byte pieces). No id of a CONTROL piece ever comes
 * from the text. Returns 0, or -EINVAL when add_bos and the model has no BOS, text is NULL with
 * len > 0, or len is over 512 MiB. Caller owns *ids (free). Thread-safe. */
int tok_encode(const struct tok *t, const char *text, size_t len, bool add_bos, int32_t **ids,
               size_t *n_ids);

/* Decodes ids to UTF-8 exactly as SentencePiece's DecodeIds: control pieces (BOS/EOS) produce
 * nothing, U+2581 becomes a space, runs of byte pieces are reassembled (invalid sequences become
 * U+FFFD), and the dummy-prefix space of the first piece is dropped. Returns 0 or -EINVAL for an
 * id out of range. Caller owns *text (NUL-terminated, free). Thread-safe. */
int tok_decode(const struct tok *t, const int32_t *ids, size_t n_ids, char **text,
               size_t *text_len);

#ifdef __cplusplus
}
#endif

#endif
