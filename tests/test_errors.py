from pathlib import Path

from cim.errors import CimError, ErrorCode, error_table_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "error-codes.md"


def test_error_codes_are_unique_and_well_formed() -> None:
    codes = [member.code for member in ErrorCode]
    assert len(codes) == len(set(codes))
    for member in ErrorCode:
        category, detail = member.code.split(".")
        assert member.category == int(category)
        assert detail.isdigit()
        assert ErrorCode.from_code(member.code) is member


def test_documented_table_matches_the_code() -> None:
    assert error_table_markdown() in DOC.read_text(encoding="utf-8")


def test_cim_error_renders_one_line() -> None:
    error = CimError(ErrorCode.BAD_DATETIME, "'x' is not an xs:dateTime", xpath="/A/b", line=3)
    assert str(error) == "[2.2] 'x' is not an xs:dateTime (line 3, /A/b)"
    assert "\n" not in str(error)
